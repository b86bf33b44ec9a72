"""A training job stopped on one node resumes on another from its checkpoint in shared storage.

Two workers with different data directories (so neither sees the other's job directory) share one
store and one storage: the local directory, or S3 on moto's real S3 server. Worker A is stopped
(its node shutting down) right after its first checkpoint reached storage; worker B takes the job
over, resumes at that step, and ends with the LoRAs of an uninterrupted run.

A's node is told to shut down when its trainer reports step 10 (the demo model's first checkpoint):
the trainer stops before step 11, and the worker gives the job back to the queue.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.s3 import S3Endpoint
from tests.training.synthetic import make_dataset_zip
from wanforge.config import Settings
from wanforge.engine.loading import LoadedModel, load_pipeline
from wanforge.media.storage import LocalStorage, Storage
from wanforge.store import jobs
from wanforge.store.db import Database
from wanforge.store.tables import Prediction
from wanforge.training.checkpoint import StoredCheckpoints
from wanforge.training.job import train_from_zip
from wanforge.training.run import TrainParams
from wanforge.vocabulary import Status
from wanforge.worker import loop as worker_loop
from wanforge.worker import train_task
from wanforge.worker.loop import WorkerLoop
from wanforge.worker.progress import ProgressReporter

TRAINER = "wavespeed-ai/wan-2.2-i2v-lora-trainer"
STEPS = 12  # per expert: under the API's least (50), set below; the demo model checkpoints every 10


FIRST_CHECKPOINT = 10


class SeenStorage:
    """The shared storage as worker A sees it, noting the checkpoints A stores."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.checkpoints: list[str] = []

    def put_file(self, key: str, src_path: Path) -> None:
        self.inner.put_file(key, src_path)
        if "/checkpoints/" in key:
            self.checkpoints.append(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def shut_down_at_first_checkpoint(monkeypatch: pytest.MonkeyPatch, loop: WorkerLoop) -> None:
    """`loop`'s node shuts down once its trainer reports the step of the first checkpoint."""

    class Reporter(ProgressReporter):
        def report(self, stage: str, step: int, total: int, *, force: bool = False, **extra: Any) -> None:
            super().report(stage, step, total, force=force, **extra)
            if self.worker_id == loop.worker_id and stage.startswith("training") and step >= FIRST_CHECKPOINT:
                loop.shutdown.set()

    monkeypatch.setattr(worker_loop, "ProgressReporter", Reporter)


@pytest.fixture(scope="module")
def demo() -> LoadedModel:
    return load_pipeline("demo", device="cpu")


@pytest.fixture(autouse=True)
def short_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Train STEPS steps per expert, not the 50 the API asks at least (a short test)."""

    def shorter(loaded: LoadedModel, zip_path: Path, work_dir: Path, params: TrainParams, **kw: Any) -> Any:
        return train_from_zip(loaded, zip_path, work_dir, dataclasses.replace(params, steps=STEPS), **kw)

    monkeypatch.setattr(train_task, "train_from_zip", shorter)


@pytest.fixture(params=["local", "s3"])
def storage_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """What both nodes' settings share about storage (the local case: one directory both mount)."""
    if request.param == "local":
        yield {"shared_dir": tmp_path / "shared"}
        return
    request.getfixturevalue("s3_env")
    endpoint: S3Endpoint = request.getfixturevalue("s3_endpoint")
    yield {"storage_url": f"s3://{endpoint.new_bucket()}/cluster", "s3_endpoint_url": endpoint.url}


def node(
    settings: Settings, name: str, shared: dict[str, Any], db: Database, loaded: LoadedModel
) -> WorkerLoop:
    """A worker of its own node: its own data directory, the shared store and storage."""
    values = {k: v for k, v in shared.items() if k != "shared_dir"}
    node_settings = settings.model_copy(update={"data_dir": settings.data_dir.parent / name, **values})
    loop = WorkerLoop(node_settings, db, worker_id=f"worker-{name}")
    if "shared_dir" in shared:
        loop.storage = LocalStorage(shared["shared_dir"])
    loop.tasks = {"train": partial(train_task.run_train, loaded=loaded)}
    return loop


def submit(db: Database, data: str) -> str:
    return jobs.create_prediction(
        db,
        model=TRAINER,
        kind="train",
        input={"data": data, "steps": 50, "lora_rank": 4},
        server_base="http://h",
        max_attempts=2,
    ).id


def claim(loop: WorkerLoop, db: Database) -> Prediction:
    row = jobs.claim_next(db, loop.worker_id, loop.settings.lease_s, ("train",))
    assert row is not None
    return row


def loras(loop: WorkerLoop, row: Prediction, tmp_path: Path) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for name, key in row.result["named_outputs"].items():
        local = tmp_path / f"{row.id}-{name}.safetensors"
        loop.storage.copy_to(key, local)
        out[name] = load_file(local)
    return out


def test_a_job_stopped_on_one_node_resumes_on_another_from_its_stored_checkpoint(
    settings: Settings,
    db: Database,
    demo: LoadedModel,
    storage_settings: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if (db.engine.dialect.name == "sqlite") != ("shared_dir" in storage_settings):
        pytest.skip(
            "each storage once, to keep the suite short: the shared directory on SQLite, S3 on PostgreSQL"
        )
    zip_path = make_dataset_zip(
        tmp_path / "d.zip", {"clips/a.mp4": "p3r5on waves"}, frames=17, width=48, height=32
    )
    data = "data:application/zip;base64," + base64.b64encode(zip_path.read_bytes()).decode()
    a = node(settings, "node-a", storage_settings, db, demo)
    b = node(settings, "node-b", storage_settings, db, demo)
    shared = a.storage
    watched = SeenStorage(shared)
    a.storage = watched
    shut_down_at_first_checkpoint(monkeypatch, a)

    pid = submit(db, data)
    a.run_job(claim(a, db))
    stopped = jobs.get_prediction(db, pid)
    assert stopped is not None
    assert (stopped.status, stopped.attempts, stopped.lease_owner) == (Status.CREATED, 0, None)  # released
    assert watched.checkpoints == [StoredCheckpoints.key_for(pid, zip_path, "high_noise")]
    assert shared.exists(watched.checkpoints[0])

    row = claim(b, db)
    assert not (b.settings.jobs_dir / pid).exists()  # B's node has nothing of this job
    b.run_job(row)
    done = jobs.get_prediction(db, pid)
    assert done is not None
    assert done.status == Status.COMPLETED, done.error
    assert done.result["training"]["high_noise"]["resumed_from"] == FIRST_CHECKPOINT
    assert "resuming high_noise at step 10 from its checkpoint in storage" in done.logs
    assert done.result["training"]["low_noise"]["resumed_from"] == 0
    # the job's scratch in storage is gone with its outcome, and so is B's job directory
    assert not shared.exists(watched.checkpoints[0])
    assert not shared.exists(StoredCheckpoints.key_for(pid, zip_path, "low_noise"))
    assert not (b.settings.jobs_dir / pid).exists()

    straight_id = submit(db, data)  # the same job, never interrupted
    b.run_job(claim(b, db))
    straight = jobs.get_prediction(db, straight_id)
    assert straight is not None and straight.status == Status.COMPLETED, straight and straight.error
    assert straight.result["training"]["high_noise"]["resumed_from"] == 0
    resumed, uninterrupted = loras(b, done, tmp_path), loras(b, straight, tmp_path)
    assert resumed.keys() == uninterrupted.keys() == {"high_noise_lora", "low_noise_lora"}
    for name, tensors in uninterrupted.items():
        assert resumed[name].keys() == tensors.keys()
        for key, value in tensors.items():
            torch.testing.assert_close(resumed[name][key], value, rtol=0, atol=0)
