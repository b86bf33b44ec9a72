"""The image-to-video LoRA models: accepted bodies, and every bad input's error naming its field."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from wanforge.catalog import MODELS, ImageToVideoLoraInput
from wanforge.media.lora_files import CONVERT_HINT
from wanforge.store import jobs
from wanforge.store.db import Database

I2V_480 = "/api/v3/wavespeed-ai/wan-2.2/i2v-480p-lora"
I2V_720 = "/api/v3/wavespeed-ai/wan-2.2/i2v-720p-lora"
I2V_ANY = "/api/v3/wavespeed-ai/wan-2.2/image-to-video-lora"
GOOD = {"image": "https://example.com/cat.png", "prompt": "a cat walks"}
LORA = {"path": "https://example.com/style.safetensors", "scale": 0.8}


def _err(resp: Any, code: int, message: str) -> None:
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body == {"code": code, "message": message, "data": None}


@pytest.mark.parametrize("path", [I2V_480, I2V_720, I2V_ANY])
def test_a_full_body_is_stored_as_sent(
    client: TestClient, auth: dict[str, str], db: Database, path: str
) -> None:
    body = {
        **GOOD,
        "negative_prompt": "blurry",
        "last_image": "/files/uploads/abc/last.png",
        "duration": 8,
        "seed": 7,
        "loras": [{"path": "my_style.safetensors"}],
        "high_noise_loras": [LORA, {"path": "/files/outputs/x/p3r5on_high_noise.safetensors", "scale": 4}],
        "low_noise_loras": [{"path": "http://example.com/a", "scale": 0}],
    }
    resp = client.post(path, headers=auth, json=body)
    assert resp.status_code == 200, resp.text
    row = jobs.get_prediction(db, resp.json()["data"]["id"])
    assert row is not None and row.model == path.removeprefix("/api/v3/") and row.kind == "generate"
    expected = {
        **body,
        "loras": [{"path": "my_style.safetensors", "scale": 1.0}],
        "high_noise_loras": [LORA, {"path": body["high_noise_loras"][1]["path"], "scale": 4.0}],  # type: ignore[index]
        "low_noise_loras": [{"path": "http://example.com/a", "scale": 0.0}],
    }
    if path == I2V_ANY:
        expected["resolution"] = "480p"
    assert row.input == expected


def test_defaults(client: TestClient, auth: dict[str, str], db: Database) -> None:
    resp = client.post(I2V_ANY, headers=auth, json={**GOOD, "resolution": "720p"})
    row = jobs.get_prediction(db, resp.json()["data"]["id"])
    assert row is not None
    assert row.input == {
        **GOOD,
        "negative_prompt": "",
        "last_image": None,
        "duration": 5,
        "seed": -1,
        "loras": [],
        "high_noise_loras": [],
        "low_noise_loras": [],
        "resolution": "720p",
    }


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (
            {"high_noise_loras": [LORA] * 4},
            1401,
            "invalid parameter high_noise_loras[3]: at most 3 entries are allowed, got 4",
        ),
        (
            {"loras": [LORA] * 5},
            1401,
            "invalid parameter loras[3]: at most 3 entries are allowed, got 5",
        ),
        (
            {"loras": [{"path": "a.safetensors", "scale": 4.5}]},
            1401,
            "invalid parameter loras[0].scale: Input should be less than or equal to 4",
        ),
        (
            {"low_noise_loras": [LORA, {"path": "a.safetensors", "scale": -0.1}]},
            1401,
            "invalid parameter low_noise_loras[1].scale: Input should be greater than or equal to 0",
        ),
        (
            {"loras": [{"path": "a.safetensors", "scale": True}]},
            1401,
            "invalid parameter loras[0].scale: must not be a boolean",
        ),
        (
            {"loras": [{"path": "a.safetensors", "scale": "1"}]},
            1401,
            "invalid parameter loras[0].scale: must be a number, not a string",
        ),
        ({"seed": "7"}, 1401, "invalid parameter seed: must be a number, not a string"),
        (
            {"loras": [{"path": "a.safetensors", "scale": "strong"}]},
            1401,
            "invalid parameter loras[0].scale: must be a number, not a string",
        ),
        ({"loras": [{"scale": 1.0}]}, 1400, "missing required parameter: loras[0].path"),
        (
            {"high_noise_loras": [{"path": "a.safetensors", "scal": 0.5}]},
            1401,
            "invalid parameter high_noise_loras[0].scal: Extra inputs are not permitted",
        ),
        ({"loras": {"path": "a.safetensors"}}, 1401, "invalid parameter loras: Input should be a valid list"),
        (
            {"loras": ["a.safetensors"]},
            1401,
            "invalid parameter loras[0]: Input should be a valid dictionary or object to extract fields from",
        ),
        (
            {"loras": [{"path": ""}]},
            1401,
            "invalid parameter loras[0].path: String should have at least 1 character",
        ),
        (
            {"loras": [{"path": "https://example.com/" + "a" * 8200}]},
            1401,
            "invalid parameter loras[0].path: String should have at most 8192 characters",
        ),
        (
            {"loras": [{"path": "x" * 256}]},
            1401,
            "invalid parameter loras[0].path: a LoRA file name may have at most 255 characters",
        ),
        ({"duration": 6}, 1401, "invalid parameter duration: Input should be 5 or 8"),
        ({"duration": True}, 1401, "invalid parameter duration: must not be a boolean"),
        (
            {"seed": 2147483648},
            1401,
            "invalid parameter seed: Input should be less than or equal to 2147483647",
        ),
        (
            {"last_image": "ftp://e.com/a.png"},
            1401,
            "invalid parameter last_image: must be an http(s) URL, an upload URL of this server "
            "(/files/...) or a data: URI",
        ),
        ({"last_image": ""}, 1401, "invalid parameter last_image: String should have at least 1 character"),
    ],
)
def test_bad_input_names_the_field(
    client: TestClient, auth: dict[str, str], extra: dict[str, Any], code: int, message: str
) -> None:
    _err(client.post(I2V_480, headers=auth, json={**GOOD, **extra}), code, message)


NAME_RULE = (
    "a LoRA name must be a plain file name (letters, digits, spaces and ._+=@,()[]-; no path "
    "separators, no '..'); the path must be an http(s) URL, a URL of this server's files "
    "(/files/...), or the name of a file in the server's LoRA directory"
)


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("../secret.safetensors", NAME_RULE),
        ("sub/dir.safetensors", NAME_RULE),
        ("..", NAME_RULE),
        (".hidden.safetensors", NAME_RULE),
        ("C:\\loras\\a.safetensors", NAME_RULE),
        ("a\x00b", "must not contain NUL characters"),
        ("model.pt", CONVERT_HINT),
        ("https://example.com/dl/model.CKPT?x=1", CONVERT_HINT),
        ("/files/uploads/abc/pytorch_lora_weights.bin", CONVERT_HINT),
        (
            "data:application/octet-stream;base64,AAAA",
            "data: URIs are not accepted for LoRAs; the path must be an http(s) URL, a URL of this "
            "server's files (/files/...), or the name of a file in the server's LoRA directory",
        ),
        (
            "file:///etc/passwd",
            "must be an http(s) URL, a URL of this server's files (/files/...), or the name of a "
            "file in the server's LoRA directory",
        ),
    ],
)
def test_bad_lora_paths_are_refused_at_submission(
    client: TestClient, auth: dict[str, str], path: str, detail: str
) -> None:
    resp = client.post(I2V_720, headers=auth, json={**GOOD, "low_noise_loras": [LORA, {"path": path}]})
    _err(resp, 1401, f"invalid parameter low_noise_loras[1].path: {detail}")


def test_resolution_of_the_generic_model(client: TestClient, auth: dict[str, str]) -> None:
    resp = client.post(I2V_ANY, headers=auth, json={**GOOD, "resolution": "1080p"})
    _err(resp, 1401, "invalid parameter resolution: Input should be '480p' or '720p'")


def test_missing_image_and_prompt(client: TestClient, auth: dict[str, str]) -> None:
    resp = client.post(I2V_ANY, headers=auth, json={"loras": [LORA]})
    _err(resp, 1400, "missing required parameter: image (also missing: prompt)")


def test_openapi_has_one_request_schema_per_lora_model(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    refs = {}
    for path in (I2V_480, I2V_720, I2V_ANY):
        body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        refs[path] = body["$ref"].rsplit("/", 1)[1]
    assert refs == {
        I2V_480: "I2V480pLoraInput",
        I2V_720: "I2V720pLoraInput",
        I2V_ANY: "ImageToVideoLoraInput",
    }
    props = schema["components"]["schemas"]["ImageToVideoLoraInput"]["properties"]
    assert props["resolution"]["enum"] == ["480p", "720p"] and props["resolution"]["default"] == "480p"
    assert props["duration"]["enum"] == [5, 8]
    for field in ("loras", "high_noise_loras", "low_noise_loras"):
        assert props[field]["maxItems"] == 3 and props[field]["items"] == {
            "$ref": "#/components/schemas/LoraEntry"
        }
    entry = schema["components"]["schemas"]["LoraEntry"]["properties"]
    assert entry["scale"] == {
        "type": "number",
        "maximum": 4.0,
        "minimum": 0.0,
        "default": 1.0,
        "title": "Scale",
        "description": "The LoRA's strength.",
    }
    assert "WANFORGE_LORA_DIR" in entry["path"]["description"]
    assert "resolution" not in schema["components"]["schemas"]["I2V480pLoraInput"]["properties"]


def test_catalog_resolutions() -> None:
    assert MODELS["wavespeed-ai/wan-2.2/i2v-480p-lora"].resolution == "480p"
    assert MODELS["wavespeed-ai/wan-2.2/i2v-720p-lora"].resolution == "720p"
    spec = MODELS["wavespeed-ai/wan-2.2/image-to-video-lora"]
    assert spec.resolution is None and spec.input_model is ImageToVideoLoraInput
