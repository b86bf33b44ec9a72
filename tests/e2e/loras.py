"""Helpers for end-to-end LoRA tests: train two tiny LoRAs through the API, generate with them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.server import Server

TRAINER = "wavespeed-ai/wan-2.2-i2v-lora-trainer"
I2V_480P_LORA = "wavespeed-ai/wan-2.2/i2v-480p-lora"


def train_two_loras(server: Server, dataset_zip: Path, *, steps: int = 50, rank: int = 4) -> tuple[str, str]:
    """Upload `dataset_zip`, train, and return the URLs (high-noise, low-noise) from the result."""
    with server.client() as c:
        url = server.upload(dataset_zip)
        body = {"data": url, "steps": steps, "lora_rank": rank}
        pid = c.post(f"/api/v3/{TRAINER}", json=body).json()["data"]["id"]
    data = server.wait_for(pid, timeout_s=600)
    assert data["status"] == "completed", data
    result = data["result"]
    assert data["outputs"] == [result["high_noise_lora"], result["low_noise_lora"]]
    return result["high_noise_lora"], result["low_noise_lora"]


def generate(server: Server, body: dict[str, Any], *, model: str = I2V_480P_LORA) -> dict[str, Any]:
    """Submit `body` to `model` and wait for the prediction (with its logs)."""
    with server.client() as c:
        pid = c.post(f"/api/v3/{model}", json=body).json()["data"]["id"]
    server.wait_for(pid, timeout_s=600)
    with server.client() as c:
        data: dict[str, Any] = c.get(f"/api/v3/predictions/{pid}").json()["data"]
    return data
