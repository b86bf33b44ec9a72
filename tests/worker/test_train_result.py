"""The trainer's result says which file goes to `high_noise_loras` and which to `low_noise_loras`."""

from __future__ import annotations

import base64
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from wanforge.config import Settings
from wanforge.predictions import prediction_out
from wanforge.store import jobs
from wanforge.store.db import Database
from wanforge.training.dataset import DatasetReport
from wanforge.training.job import TrainedJob
from wanforge.training.run import TrainResult
from wanforge.worker import train_task
from wanforge.worker.loop import WorkerLoop

TRAINER = "wavespeed-ai/wan-2.2-i2v-lora-trainer"


def fake_training(zip_path: Path, work_dir: Path, *args: Any, output_stem: str, **kwargs: Any) -> TrainedJob:
    """Writes the two files the real trainer writes, with its names."""
    work_dir.mkdir(parents=True, exist_ok=True)
    high, low = (
        work_dir / f"{output_stem}_high_noise.safetensors",
        work_dir / f"{output_stem}_low_noise.safetensors",
    )
    high.write_bytes(b"high")
    low.write_bytes(b"low")
    return TrainedJob(report=DatasetReport(clips_used=1), result=TrainResult(high, low, {"steps": 50}))


def test_the_result_names_each_expert_file(
    settings: Settings, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        train_task, "train_from_zip", lambda loaded, z, w, *a, **k: fake_training(z, w, *a, **k)
    )
    data = "data:application/zip;base64," + base64.b64encode(b"PK not really").decode()
    pid = jobs.create_prediction(
        db,
        model=TRAINER,
        kind="train",
        input={"data": data, "steps": 50},
        server_base="http://h",
        max_attempts=1,
    ).id
    loop = WorkerLoop(settings, db)
    loop.tasks = {"train": partial(train_task.run_train, loaded=None)}  # type: ignore[arg-type]
    row = jobs.claim_next(db, loop.worker_id, settings.lease_s, ("train",))
    assert row is not None
    loop.run_job(row)
    done = jobs.get_prediction(db, pid)
    assert done is not None
    out = prediction_out(done, "http://h")
    assert out.status == "completed", out.error
    high, low = out.outputs  # high-noise first
    assert high.endswith(f"p3r5on_{pid[:8]}_high_noise.safetensors")
    assert low.endswith(f"p3r5on_{pid[:8]}_low_noise.safetensors")
    assert out.result["high_noise_lora"] == high and out.result["low_noise_lora"] == low
    assert "named_outputs" not in out.result
    assert loop.storage.read_bytes(done.result["named_outputs"]["high_noise_lora"]) == b"high"

    # while not completed, the result shows no URLs
    queued = jobs.create_prediction(
        db, model=TRAINER, kind="train", input={"data": data}, server_base="http://h", max_attempts=1
    )
    queued.result = {"named_outputs": {"high_noise_lora": "outputs/x/a.safetensors"}}
    assert prediction_out(queued, "http://h").result == {}
