"""Plain bad input never answers 5xx: each is 400 in the envelope, naming the field or the body."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

I2V = "/api/v3/alibaba/wan-2.2/i2v-plus-480p"
TRAINER = "/api/v3/wavespeed-ai/wan-2.2-i2v-lora-trainer"
LIST = "/api/v3/predictions"
GOOD = {"image": "https://example.com/cat.png", "prompt": "a cat walks"}


def _err(resp: Any, status: int, code: int, *needles: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"code", "message", "data"} and body["data"] is None, body
    assert body["code"] == code, body
    for needle in needles:
        assert needle in body["message"], body


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"page": 10000000000000000000}', "page"),
        ('{"page": 100000000000000}', "page"),
        ('{"page": 0}', "page"),
        ('{"page_size": 101}', "page_size"),
        ('{"created_after": "9999-12-31T23:59:59-01:00"}', "created_after"),
        ('{"created_before": "9999-12-31T23:59:59-01:00"}', "created_before"),
        ('{"created_after": "0001-01-01T00:00:00+01:00"}', "created_after"),
        ('{"created_after": "not a time"}', "created_after"),
        ('{"status": "running"}', "status"),
        ('{"status": 5}', "status"),
        ('{"model": "' + "m" * 201 + '"}', "model"),
        ('{"page": 1e400}', "page"),
        ('{"page": NaN}', "page"),
        ('{"page": [[[1]]]}', "page"),
    ],
)
def test_list_filters_are_bounded(client: TestClient, auth: dict[str, str], raw: str, field: str) -> None:
    resp = client.post(LIST, headers={**auth, "Content-Type": "application/json"}, content=raw.encode())
    _err(resp, 400, 1401, field)


def test_list_last_allowed_page_is_empty(client: TestClient, auth: dict[str, str]) -> None:
    resp = client.post(LIST, headers=auth, json={"page": 100_000, "page_size": 100})
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["items"] == [] and resp.json()["data"]["page"] == 100_000


def test_list_status_filter_takes_every_status(client: TestClient, auth: dict[str, str]) -> None:
    for status in ("created", "processing", "completed", "failed", "cancelled"):
        resp = client.post(LIST, headers=auth, json={"status": status})
        assert resp.status_code == 200 and resp.json()["data"]["total"] == 0, resp.text


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (I2V, {**GOOD, "seed": True}, "seed"),
        (I2V, {**GOOD, "duration": True}, "duration"),
        (TRAINER, {"data": "https://example.com/d.zip", "steps": True}, "steps"),
        (TRAINER, {"data": "https://example.com/d.zip", "learning_rate": False}, "learning_rate"),
        (TRAINER, {"data": "https://example.com/d.zip", "lora_rank": True}, "lora_rank"),
        (LIST, {"page": True}, "page"),
        ("/api/v3/media/uploads", {"filename": "a.png", "size": True}, "size"),
    ],
)
def test_a_boolean_is_not_a_number(
    client: TestClient, auth: dict[str, str], path: str, body: dict[str, Any], field: str
) -> None:
    """Lax parsing would take `true` as 1: a `seed` of `true` must be refused, not run as seed 1."""
    _err(client.post(path, headers=auth, json=body), 400, 1401, f"invalid parameter {field}", "boolean")


def test_booleans_stay_booleans(client: TestClient, auth: dict[str, str]) -> None:
    resp = client.post(I2V, headers=auth, json={**GOOD, "enable_prompt_expansion": False, "seed": 7})
    assert resp.status_code == 200 and resp.json()["data"]["status"] == "created", resp.text


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_prompts_have_a_maximum(client: TestClient, auth: dict[str, str], field: str) -> None:
    from wanforge.catalog import PROMPT_MAX_CHARS

    assert PROMPT_MAX_CHARS == 4000
    at_limit = client.post(I2V, headers=auth, json={**GOOD, field: "é" * PROMPT_MAX_CHARS})
    assert at_limit.status_code == 200, at_limit.text
    over = client.post(I2V, headers=auth, json={**GOOD, field: "x" * (PROMPT_MAX_CHARS + 1)})
    _err(over, 400, 1401, f"invalid parameter {field}", "4000 characters")
    huge = client.post(I2V, headers=auth, json={**GOOD, field: "x" * 20_000_000})
    _err(huge, 400, 1401, field)


@pytest.mark.parametrize(("path", "field"), [(I2V, "image"), (TRAINER, "data")])
def test_media_urls_have_a_maximum(client: TestClient, auth: dict[str, str], path: str, field: str) -> None:
    body = {**GOOD} if path == I2V else {}
    long_url = "https://example.com/" + "a" * 9000
    _err(client.post(path, headers=auth, json={**body, field: long_url}), 400, 1401, field, "8192")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"prompt": "\xff\xfe", "image": "https://e.com/a.png"}', "request body is not valid UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "request body is nested too deeply"),
        (b'{"prompt": ' + b"[" * 5000 + b"]" * 5000 + b"}", "request body is nested too deeply"),
        (b"{not json", "request body is not valid JSON"),
    ],
)
@pytest.mark.parametrize("path", [I2V, LIST, "/api/v3/media/uploads"])
def test_unreadable_body_names_the_body(
    client: TestClient, auth: dict[str, str], raw: bytes, message: str, path: str
) -> None:
    resp = client.post(path, headers={**auth, "Content-Type": "application/json"}, content=raw)
    _err(resp, 400, 1401, message)


def test_405_carries_allow(client: TestClient, auth: dict[str, str]) -> None:
    resp = client.put(I2V, headers=auth, json=GOOD)
    _err(resp, 405, 405, "Method Not Allowed")
    assert resp.headers["allow"] == "POST"
    resp = client.get("/api/v3/media/upload/binary", headers=auth)
    _err(resp, 405, 405)
    assert resp.headers["allow"] == "POST"


def test_openapi_documents_the_envelope_really_sent(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for path, item in schema["paths"].items():
        for method, op in item.items():
            assert "422" not in op["responses"], (path, method)
            if path.startswith("/api/v3/") and method == "post":
                error = op["responses"]["400"]["content"]["application/json"]["schema"]
                assert error == {"$ref": "#/components/schemas/ErrorEnvelope"}, (path, method)
    envelope = schema["components"]["schemas"]["ErrorEnvelope"]
    assert set(envelope["properties"]) == {"code", "message", "data"}
    image = schema["components"]["schemas"]["I2VPlus480pInput"]["properties"]["image"]
    assert "http(s) URL" in image["description"] and "/files/" in image["description"]
    assert "data: URI" in image["description"]
    data = schema["components"]["schemas"]["LoraTrainerInput"]["properties"]["data"]
    assert "http(s) URL" in data["description"] and "data: URI" in data["description"]


@pytest.mark.parametrize(
    ("path", "raw", "field"),
    [
        ("/api/v3/media/uploads", '{"filename": "a\\u0000.png"}', "filename"),
        (LIST, '{"model": "a\\u0000"}', "model"),
        ("/api/v3/predictions/delete", '{"ids": ["a\\u0000"]}', "ids"),
        (I2V, '{"image": "https://example.com/a.png", "prompt": "a\\u0000b"}', "prompt"),
        (TRAINER, '{"data": "https://example.com/d.zip", "trigger_word": "p\\u0000"}', "trigger_word"),
    ],
)
def test_nul_characters_are_refused_by_field(
    client: TestClient, auth: dict[str, str], path: str, raw: str, field: str
) -> None:
    """PostgreSQL cannot store NUL: it must be a 400 naming the field, never a 500 from the store."""
    resp = client.post(path, headers={**auth, "Content-Type": "application/json"}, content=raw.encode())
    _err(resp, 400, 1401, f"invalid parameter {field}", "NUL")


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("prediction", ["a%00b", "%00", "x" * 32, "0" * 33, "Z" * 32])
def test_ids_of_no_row_are_404(
    client: TestClient, auth: dict[str, str], method: str, prediction: str
) -> None:
    resp = client.request(method, f"/api/v3/predictions/{prediction}", headers=auth)
    _err(resp, 404, 404, "not found")
    if method == "GET":
        _err(client.get(f"/api/v3/predictions/{prediction}/result", headers=auth), 404, 404, "not found")


def test_upload_ticket_of_no_row_is_404(client: TestClient) -> None:
    resp = client.put("/api/v3/media/uploads/a%00b?token=x", content=b"x")
    _err(resp, 404, 404)
