"""A training job over `WANFORGE_TRAIN_MEMORY_LIMIT_GB` fails with 1403 before it trains."""

from __future__ import annotations

import base64
from functools import partial
from pathlib import Path

from tests.training.synthetic import make_dataset_zip
from tests.training.test_preflight import DEMO_REFUSAL
from wanforge.config import Settings
from wanforge.engine.loading import load_pipeline
from wanforge.predictions import prediction_out
from wanforge.store import jobs
from wanforge.store.db import Database
from wanforge.training.preflight import GIB
from wanforge.vocabulary import ErrorCode
from wanforge.worker import train_task
from wanforge.worker.loop import WorkerLoop
from wanforge.worker.tasks import build_tasks

TRAINER = "wavespeed-ai/wan-2.2-i2v-lora-trainer"


def test_a_job_over_the_memory_limit_fails_1403_before_training(
    settings: Settings, db: Database, tmp_path: Path
) -> None:
    settings.train_memory_limit_gb = 400_000 / GIB
    zip_path = make_dataset_zip(
        tmp_path / "d.zip", {"clips/a.mp4": "p3r5on waves"}, frames=17, width=48, height=32
    )
    data = "data:application/zip;base64," + base64.b64encode(zip_path.read_bytes()).decode()
    pid = jobs.create_prediction(
        db,
        model=TRAINER,
        kind="train",
        input={"data": data, "steps": 50, "lora_rank": 32},
        server_base="http://h",
        max_attempts=1,
    ).id
    loop = WorkerLoop(settings, db)
    loop.tasks = {"train": partial(train_task.run_train, loaded=load_pipeline("demo", device="cpu"))}
    row = jobs.claim_next(db, loop.worker_id, settings.lease_s, ("train",))
    assert row is not None
    loop.run_job(row)
    done = jobs.get_prediction(db, pid)
    assert done is not None
    out = prediction_out(done, "http://h")
    assert (out.status, out.error_code, out.error) == ("failed", ErrorCode.TASK_FAILED, DEMO_REFUSAL)
    assert not (settings.data_dir / "jobs" / pid / "train").exists()  # nothing cached, nothing trained


def test_a_worker_with_inference_speed_options_refuses_training_clearly(
    settings: Settings, db: Database, tmp_path: Path
) -> None:
    pid = jobs.create_prediction(
        db,
        model=TRAINER,
        kind="train",
        input={"data": "https://example.com/d.zip", "steps": 50, "lora_rank": 4},
        server_base="http://h",
        max_attempts=1,
    ).id
    settings.fp8, settings.step_cache = "storage", "first_block"
    loop = WorkerLoop(settings, db)
    loop.tasks = build_tasks(settings)
    row = jobs.claim_next(db, loop.worker_id, settings.lease_s, ("train",))
    assert row is not None
    loop.run_job(row)
    done = jobs.get_prediction(db, pid)
    assert done is not None
    assert (done.status, done.error_code) == ("failed", ErrorCode.UNAVAILABLE)
    assert done.error == (
        "this worker serves the model with WANFORGE_FP8 and WANFORGE_STEP_CACHE set, which training "
        "cannot use; run training on a worker without them"
    )
