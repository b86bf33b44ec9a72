"""Issue 7's acceptance, end to end: train two LoRAs with the official SDK, generate with them
through `wavespeed-ai/wan-2.2/i2v-480p-lora`, and check the frames.

- the LoRA video differs from the base video of the same seed;
- a base job after the LoRA job equals the first base job exactly (the adapters are switched
  off, never merged into the base weights);
- the same two LoRAs converted to musubi-tuner names give the same video (at most 1 in uint8).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import wavespeed
from safetensors.torch import load_file, save_file

from tests.e2e.loras import I2V_480P_LORA, TRAINER, generate
from tests.e2e.server import Server
from tests.e2e.video import decode_mp4
from tests.engine.lora_files import wan_to_musubi
from tests.training.synthetic import make_dataset_zip

pytestmark = pytest.mark.slow


def _frames(data: dict[str, Any]) -> np.ndarray:
    assert data["status"] == "completed", data
    [url] = data["outputs"]
    return decode_mp4(httpx.get(url, timeout=30).content).pixels.astype(np.int16)


def _as_musubi(server: Server, url: str, path: Path) -> str:
    """Download a trained LoRA, rename its keys the musubi-tuner way, upload it back."""
    path.with_suffix(".orig").write_bytes(httpx.get(url, timeout=30).content)
    save_file(wan_to_musubi(load_file(str(path.with_suffix(".orig")))), str(path))
    return server.upload(path)


def test_sdk_trained_loras_change_the_video_and_leave_the_base_exact(
    server: Server, image_16x9: Path, tmp_path: Path
) -> None:
    client = wavespeed.Client(api_key=server.api_key, base_url=server.base_url)
    dataset = make_dataset_zip(tmp_path / "d.zip", {"a.mp4": "p3r5on slides right"}, frames=24)
    trained = client.run(
        TRAINER,
        # a high learning rate, so 50 steps on the tiny model move the frames visibly
        {"data": client.upload(str(dataset)), "steps": 50, "learning_rate": 0.05, "lora_rank": 4},
        timeout=600,
    )
    high, low = trained["outputs"]
    assert high.endswith("_high_noise.safetensors") and low.endswith("_low_noise.safetensors")

    image = server.upload(image_16x9)
    base_body = {"image": image, "prompt": "p3r5on slides right", "seed": 7}
    lora_body = {
        **base_body,
        "high_noise_loras": [{"path": high, "scale": 4.0}],
        "low_noise_loras": [{"path": low, "scale": 4.0}],
    }
    base = _frames(generate(server, base_body, model=I2V_480P_LORA))
    with_loras = generate(server, lora_body, model=I2V_480P_LORA)
    lora = _frames(with_loras)
    base_again = _frames(generate(server, base_body, model=I2V_480P_LORA))

    assert base.shape == lora.shape == (81, 480, 832, 3)
    assert np.abs(lora - base).max() > 8, "the LoRAs did not change the video"
    assert np.array_equal(base_again, base), "a base job after a LoRA job must equal the first base job"
    adapters = with_loras["result"]["adapters"]
    assert sorted((a["expert"], a["scale"], a["format"]) for a in adapters) == [
        ("high_noise", 4.0, "wanforge"),
        ("low_noise", 4.0, "wanforge"),
    ]
    assert {"lora_fetch", "lora_load", "lora_activate"} <= set(with_loras["timings"])

    musubi_body = {
        **base_body,
        "high_noise_loras": [{"path": _as_musubi(server, high, tmp_path / "high.safetensors"), "scale": 4.0}],
        "low_noise_loras": [{"path": _as_musubi(server, low, tmp_path / "low.safetensors"), "scale": 4.0}],
    }
    musubi = generate(server, musubi_body, model=I2V_480P_LORA)
    assert {a["format"] for a in musubi["result"]["adapters"]} == {"musubi"}
    assert np.abs(_frames(musubi) - lora).max() <= 1, "the musubi-format LoRAs gave another video"
