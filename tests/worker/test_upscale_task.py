"""The learned upscaler and VAE tiling on the prediction, and a bad WANFORGE_UPSCALER at start-up."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.worker.test_generate_task import IMAGE, FakeEngine, FakeResult, run
from wanforge.config import Settings
from wanforge.engine.generate import GenerationRequest
from wanforge.engine.upscale import UpscalerError
from wanforge.store.db import Database
from wanforge.worker import tasks


class UpscalingEngine(FakeEngine):
    """Answers as an engine with WANFORGE_UPSCALER and native-1080p tiling would."""

    def generate(
        self, req: GenerationRequest, on_step: Any = None, should_cancel: Any = None, on_expert: Any = None
    ) -> FakeResult:
        result = super().generate(req, on_step, should_cancel, on_expert)
        learned = req.resolution == "1080p"
        return replace(
            result,
            upscaler="learned" if learned else "lanczos",
            vae_tiled=learned,
            timings={**result.timings, "upscale_s": 0.25},
        )


def test_the_learned_upscale_time_is_on_the_prediction(settings: Settings, db: Database) -> None:
    engine = UpscalingEngine()
    out = run(settings, db, engine, "alibaba/wan-2.2/i2v-plus-1080p", {"image": IMAGE, "prompt": "p"})
    assert out.status == "completed", out.error
    assert engine.seen[0].resolution == "1080p"
    assert out.timings.model_dump()["upscale"] == 250
    assert set(out.timings.model_dump()) == {"inference", "upscale"}
    assert (out.result["upscaler"], out.result["vae_tiled"]) == ("learned", True)

    out = run(settings, db, engine, "alibaba/wan-2.2/i2v-plus-720p", {"image": IMAGE, "prompt": "p"})
    assert set(out.timings.model_dump()) == {"inference"}  # Lanczos: no upscaler stage
    assert "upscaler" not in out.result and "vae_tiled" not in out.result


def test_a_bad_upscaler_fails_the_start_before_the_model_loads(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[Settings] = []
    monkeypatch.setattr(tasks, "load_model", loads.append)
    bad = settings.model_copy(update={"upscaler": tmp_path / "hidden" / "4x-UltraSharp.pth"})
    with pytest.raises(UpscalerError, match="WANFORGE_UPSCALER names no readable file") as err:
        tasks.build_tasks(bad)
    assert loads == [] and "hidden" not in str(err.value)


def test_the_settings_read_the_upscaler_and_tiling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANFORGE_UPSCALER", " ")
    monkeypatch.setenv("WANFORGE_VAE_TILING", "on")
    monkeypatch.setenv("WANFORGE_UPSCALER_TILE", "512")
    s = Settings()
    assert (s.upscaler, s.vae_tiling, s.upscaler_tile) == (None, "on", 512)
    monkeypatch.setenv("WANFORGE_VAE_TILING", "sliced")
    with pytest.raises(ValueError, match="vae_tiling"):
        Settings()
