"""The ultra-fast models at the API: served (routes, OpenAPI, unknown-model list) only when the
operator configured both distill LoRAs; a clear 404 otherwise; the same fields as their counterparts."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from wanforge.api.app import create_app
from wanforge.catalog import (
    MODELS,
    I2VInput,
    I2VLoraInput,
    served_models,
)
from wanforge.config import Settings
from wanforge.store import jobs
from wanforge.store.db import Database

ULTRA_FAST = [
    "wavespeed-ai/wan-2.2/i2v-480p-ultra-fast",
    "wavespeed-ai/wan-2.2/i2v-720p-ultra-fast",
    "wavespeed-ai/wan-2.2/i2v-480p-lora-ultra-fast",
    "wavespeed-ai/wan-2.2/i2v-720p-lora-ultra-fast",
]
GOOD = {"image": "https://example.com/cat.png", "prompt": "a cat walks", "seed": 3}
HINT = (
    "is not enabled on this server: the ultra-fast models need the operator's distill LoRAs, set by "
    "WANFORGE_ULTRA_FAST_HIGH_NOISE_LORA and WANFORGE_ULTRA_FAST_LOW_NOISE_LORA (see docs/api.md)"
)


def configured(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "ultra_fast_high_noise_lora": Path("/srv/distill/high.safetensors"),
            "ultra_fast_low_noise_lora": Path("/srv/distill/low.safetensors"),
        }
    )


def test_the_catalog_has_the_four_models_with_their_counterparts_fields() -> None:
    for model_id in ULTRA_FAST:
        spec = MODELS[model_id]
        assert spec.sampling == "ultra_fast" and spec.kind == "generate"
        assert spec.resolution == ("480p" if "480p" in model_id else "720p")
        counterpart = I2VLoraInput if "-lora-" in model_id else I2VInput
        assert issubclass(spec.input_model, counterpart)
        assert set(spec.input_model.model_fields) == set(counterpart.model_fields)


@pytest.mark.parametrize("model_id", ULTRA_FAST)
def test_not_configured_answers_404_naming_the_settings(
    client: TestClient, auth: dict[str, str], model_id: str
) -> None:
    resp = client.post(f"/api/v3/{model_id}", headers=auth, json=GOOD)
    assert resp.status_code == 404
    assert resp.json() == {"code": 404, "message": f"model '{model_id}' {HINT}", "data": None}


def test_not_configured_they_are_not_listed(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.endswith("-ultra-fast")]
    assert "/api/v3/wavespeed-ai/wan-2.2/i2v-480p-lora" in paths
    message = client.post("/api/v3/nope", headers=auth, json=GOOD).json()["message"]
    assert message == f"unknown model 'nope'; this server offers: {', '.join(served_models(settings))}"
    assert "ultra-fast" not in message and "i2v-480p-lora" in message


def test_configured_they_are_listed_and_accepted(settings: Settings, db: Database, api_key: str) -> None:
    client = TestClient(create_app(configured(settings), db))
    auth = {"Authorization": f"Bearer {api_key}"}
    paths = client.get("/openapi.json").json()["paths"]
    assert sorted(p for p in paths if p.endswith("-ultra-fast")) == sorted(f"/api/v3/{m}" for m in ULTRA_FAST)
    assert set(ULTRA_FAST) <= set(served_models(configured(settings)))
    listed = [m["id"] for m in client.get("/api/v3/models", headers=auth).json()["data"]]
    assert set(ULTRA_FAST) <= set(listed)  # the playground offers them too
    for model_id in ULTRA_FAST:
        body = {**GOOD, **({"loras": [{"path": "style.safetensors"}]} if "-lora-" in model_id else {})}
        resp = client.post(f"/api/v3/{model_id}", headers=auth, json=body)
        assert resp.status_code == 200, resp.text
        row = jobs.get_prediction(db, resp.json()["data"]["id"])
        assert row is not None and row.model == model_id and row.kind == "generate"
    # the counterparts' checks apply: the plain ones take only 5 seconds, the LoRA ones 8 as well
    bad = client.post(f"/api/v3/{ULTRA_FAST[0]}", headers=auth, json={**GOOD, "duration": 8})
    assert bad.status_code == 400 and "duration" in bad.json()["message"]
    assert (
        client.post(f"/api/v3/{ULTRA_FAST[2]}", headers=auth, json={**GOOD, "duration": 8}).status_code == 200
    )


def test_one_distill_lora_alone_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="set both WANFORGE_ULTRA_FAST_HIGH_NOISE_LORA and "):
        Settings(data_dir=tmp_path, ultra_fast_high_noise_lora=tmp_path / "high.safetensors")
    blank = Settings(data_dir=tmp_path, ultra_fast_high_noise_lora="", ultra_fast_low_noise_lora=" ")  # type: ignore[arg-type]
    assert blank.ultra_fast_configured is False
