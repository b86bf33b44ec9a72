"""The trainer's two files plug straight into the LoRA model (wiring only; the frames' parity with
diffusers' own LoRA loading is the engine's test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.loras import generate, train_two_loras
from tests.e2e.server import Server
from tests.training.synthetic import make_dataset_zip

pytestmark = pytest.mark.slow


def test_trained_loras_go_to_their_experts(server: Server, image_16x9: Path, tmp_path: Path) -> None:
    zip_path = make_dataset_zip(tmp_path / "d.zip", {"a.mp4": "a square slides right"}, frames=24)
    high, low = train_two_loras(server, zip_path)
    assert high.endswith("_high_noise.safetensors") and low.endswith("_low_noise.safetensors")
    image = server.upload(image_16x9)
    data = generate(
        server,
        {
            "image": image,
            "prompt": "p3r5on",
            "seed": 5,
            "high_noise_loras": [{"path": high}],
            "low_noise_loras": [{"path": low, "scale": 0.5}],
        },
    )
    assert data["status"] == "completed", data
    assert data["result"]["frames"] == 81 and isinstance(data["timings"]["lora_fetch"], int)
    assert "adapters" in data["result"]
