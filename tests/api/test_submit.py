"""Submitting predictions: validation errors with their codes, auth, unknown models."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

I2V = "/api/v3/alibaba/wan-2.2/i2v-plus-1080p"
TRAINER = "/api/v3/wavespeed-ai/wan-2.2-i2v-lora-trainer"
GOOD = {"image": "https://example.com/cat.png", "prompt": "a cat walks"}


def _err(resp: Any, status: int, code: int, *needles: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["code"] == code, body
    for needle in needles:
        assert needle in body["message"], body


def test_seed_example_body_is_missing_image(client: TestClient, auth: dict[str, str]) -> None:
    # the seed's own curl body: no image, no prompt
    resp = client.post(I2V, headers=auth, json={"duration": 5, "enable_prompt_expansion": False, "seed": -1})
    _err(resp, 400, 1400, "image")
    assert "prompt" in resp.json()["message"]


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"image": "https://e.com/a.png"}, 1400, "prompt"),
        ({"prompt": "x"}, 1400, "image"),
        ({**GOOD, "seed": -2}, 1401, "seed"),
        ({**GOOD, "seed": 2147483648}, 1401, "seed"),
        ({**GOOD, "seed": "abc"}, 1401, "seed"),
        ({**GOOD, "duration": 8}, 1401, "duration"),
        ({**GOOD, "enable_prompt_expansion": True}, 1401, "enable_prompt_expansion"),
        ({**GOOD, "image": "ftp://e.com/a.png"}, 1401, "image"),
        ({**GOOD, "image": ""}, 1401, "image"),
        ({**GOOD, "prompt": ""}, 1401, "prompt"),
    ],
)
def test_invalid_inputs(
    client: TestClient, auth: dict[str, str], body: dict[str, Any], code: int, field: str
) -> None:
    _err(client.post(I2V, headers=auth, json=body), 400, code, field)


def test_prompt_expansion_message_says_not_configured(client: TestClient, auth: dict[str, str]) -> None:
    resp = client.post(I2V, headers=auth, json={**GOOD, "enable_prompt_expansion": True})
    _err(resp, 400, 1401, "not configured")


def test_non_json_body(client: TestClient, auth: dict[str, str]) -> None:
    resp = client.post(I2V, headers={**auth, "Content-Type": "application/json"}, content=b"{not json")
    _err(resp, 400, 1401, "JSON")


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({}, 1400, "data"),
        ({"data": "https://e.com/d.zip", "steps": 49}, 1401, "steps"),
        ({"data": "https://e.com/d.zip", "steps": 1501}, 1401, "steps"),
        ({"data": "https://e.com/d.zip", "learning_rate": 1.5}, 1401, "learning_rate"),
        ({"data": "https://e.com/d.zip", "learning_rate": -0.1}, 1401, "learning_rate"),
        ({"data": "https://e.com/d.zip", "lora_rank": 0}, 1401, "lora_rank"),
        ({"data": "https://e.com/d.zip", "lora_rank": 129}, 1401, "lora_rank"),
        ({"data": "https://e.com/d.zip", "trigger_word": "  "}, 1401, "trigger_word"),
    ],
)
def test_trainer_bounds(
    client: TestClient, auth: dict[str, str], body: dict[str, Any], code: int, field: str
) -> None:
    _err(client.post(TRAINER, headers=auth, json=body), 400, code, field)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer "}],
)
def test_auth_required(client: TestClient, headers: dict[str, str]) -> None:
    resp = client.post(I2V, headers=headers, json=GOOD)
    assert resp.status_code == 401
    assert resp.json()["code"] == 401
    assert client.get("/api/v3/predictions/abc/result", headers=headers).status_code == 401
    assert client.post("/api/v3/media/upload/binary", headers=headers).status_code == 401


def test_auth_checked_before_validation(client: TestClient) -> None:
    assert client.post(I2V, json={}).status_code == 401


def test_unknown_model_and_prediction(client: TestClient, auth: dict[str, str]) -> None:
    _err(
        client.post("/api/v3/alibaba/wan-2.2/i2v-plus-4k", headers=auth, json=GOOD), 404, 404, "unknown model"
    )
    _err(client.get("/api/v3/predictions/nope/result", headers=auth), 404, 404, "nope")
    _err(client.get("/api/v3/predictions/nope", headers=auth), 404, 404)


def test_submit_and_read_back(client: TestClient, auth: dict[str, str]) -> None:
    resp = client.post(I2V, headers=auth, json={**GOOD, "seed": 42, "negative_prompt": "blurry"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["code"] == 200 and body["message"] == "success"
    data = body["data"]
    assert data["model"] == "alibaba/wan-2.2/i2v-plus-1080p"
    assert data["status"] == "created"
    assert data["outputs"] == [] and data["has_nsfw_contents"] == [] and data["error"] == ""
    assert data["urls"]["get"] == f"http://testserver/api/v3/predictions/{data['id']}/result"
    assert data["created_at"].endswith("Z") and "T" in data["created_at"]
    assert data["timings"] == {"inference": None}
    again = client.get(f"/api/v3/predictions/{data['id']}/result", headers=auth).json()["data"]
    assert again["id"] == data["id"] and again["status"] == "created"


def test_list_and_cancel(client: TestClient, auth: dict[str, str]) -> None:
    ids = [client.post(I2V, headers=auth, json=GOOD).json()["data"]["id"] for _ in range(3)]
    listed = client.post("/api/v3/predictions", headers=auth, json={"page": 1, "page_size": 2}).json()["data"]
    assert listed["total"] == 3 and len(listed["items"]) == 2
    cancelled = client.delete(f"/api/v3/predictions/{ids[0]}", headers=auth).json()["data"]
    assert cancelled["status"] == "cancelled"
    only = client.post("/api/v3/predictions", headers=auth, json={"status": "cancelled"}).json()["data"]
    assert [item["id"] for item in only["items"]] == [ids[0]]
    deleted = client.post("/api/v3/predictions/delete", headers=auth, json={"ids": [ids[0]]}).json()["data"]
    assert deleted["deleted"] == [ids[0]]
    assert client.get(f"/api/v3/predictions/{ids[0]}/result", headers=auth).status_code == 404


def test_openapi_documents_each_model_body(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for res in ("480p", "720p", "1080p"):
        body = paths[f"/api/v3/alibaba/wan-2.2/i2v-plus-{res}"]["post"]["requestBody"]["content"][
            "application/json"
        ]
        assert body["schema"]["$ref"].endswith(f"/I2VPlus{res}Input")
    trainer = paths["/api/v3/wavespeed-ai/wan-2.2-i2v-lora-trainer"]["post"]["requestBody"]
    assert trainer["content"]["application/json"]["schema"]["$ref"].endswith("/LoraTrainerInput")
    assert res in schema["components"]["schemas"][f"I2VPlus{res}Input"]["description"]
    props = schema["components"]["schemas"]["I2VPlus1080pInput"]["properties"]
    assert props["seed"]["minimum"] == -1 and props["seed"]["maximum"] == 2147483647


def test_sync_mode_timeout_is_recognisable(client: TestClient, auth: dict[str, str]) -> None:
    client.app.state.wanforge.settings.sync_mode_timeout_s = 0.3  # type: ignore[attr-defined]
    resp = client.post(I2V, headers=auth, json={**GOOD, "enable_sync_mode": True})
    body = resp.json()
    assert body["code"] == 5004 and body["data"]["code"] == 5004  # what the wavespeed SDK checks
    assert body["data"]["status"] == "created" and "Sync mode timed out" in body["data"]["error"]


def test_list_filter_converts_offsets_to_utc(client: TestClient, auth: dict[str, str]) -> None:
    created = client.post(I2V, headers=auth, json=GOOD).json()["data"]["created_at"]
    from datetime import datetime, timedelta, timezone

    ts = datetime.fromisoformat(created.replace("Z", "+00:00"))
    # one minute before creation, written in UTC+02:00
    before = (ts - timedelta(minutes=1)).astimezone(timezone(timedelta(hours=2)))
    listed = client.post("/api/v3/predictions", headers=auth, json={"created_after": before.isoformat()})
    assert listed.json()["data"]["total"] == 1
    after = (ts + timedelta(minutes=1)).astimezone(timezone(timedelta(hours=2)))
    listed = client.post("/api/v3/predictions", headers=auth, json={"created_after": after.isoformat()})
    assert listed.json()["data"]["total"] == 0


def test_webhook_must_be_http(client: TestClient, auth: dict[str, str]) -> None:
    resp = client.post(I2V + "?webhook=ftp://example.com/hook", headers=auth, json=GOOD)
    assert resp.status_code == 400 and resp.json()["code"] == 1401 and "webhook" in resp.json()["message"]
    ok = client.post(I2V + "?webhook=https://example.com/hook", headers=auth, json=GOOD)
    assert ok.status_code == 200


def test_webhook_secret_is_stable(client: TestClient, auth: dict[str, str]) -> None:
    first = client.get("/api/v3/webhook/secret", headers=auth).json()["data"]["secret"]
    assert first.startswith("whsec_") and len(first) > 30
    assert client.get("/api/v3/webhook/secret", headers=auth).json()["data"]["secret"] == first
    assert client.get("/api/v3/webhook/secret").status_code == 401
