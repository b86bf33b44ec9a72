"""The worker logs its memory plan at start (engine/plan.py, applied by load_pipeline)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from wanforge.config import Settings
from wanforge.worker.tasks import build_tasks


def test_the_worker_logs_its_plan_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="wanforge.worker"):
        build_tasks(Settings(data_dir=tmp_path, model="demo", content_checker="none", device="cpu"))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("memory plan for ")]
    assert len(lines) == 1
    assert lines[0].startswith(
        "memory plan for cpu, 1280x720x129: memory_mode=gpu fp8=off attention=native "
        "training_attention=native compile=off vae_tiled=False resident=transformer,transformer_2,text_encoder,vae; "
        "predicted peak "
    )
