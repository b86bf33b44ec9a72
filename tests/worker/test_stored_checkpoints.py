"""`StoredCheckpoints`: what is uploaded when, what is brought back, and what an outage does."""

from __future__ import annotations

import base64
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from tests.worker.test_train_result import TRAINER, fake_training
from wanforge.config import Settings
from wanforge.media.errors import StorageUnavailable
from wanforge.media.storage import LocalStorage
from wanforge.store import jobs
from wanforge.store.db import Database
from wanforge.training.checkpoint import (
    ExpertCheckpoint,
    StoredCheckpoints,
    checkpoint_path,
    checkpoint_step,
    save_checkpoint,
)
from wanforge.training.timesteps import Expert
from wanforge.training.trainer import TrainProgress
from wanforge.worker import train_task
from wanforge.worker.context import JobContext
from wanforge.worker.lease import StopReason
from wanforge.worker.progress import ProgressReporter

JOB = "0123456789abcdef0123456789abcdef"
DATA = "ab" * 32


def _save(train_dir: Path, expert: Expert, step: int) -> None:
    save_checkpoint(
        checkpoint_path(train_dir, expert),
        ExpertCheckpoint(
            expert=expert,
            step=step,
            total_steps=50,
            lora={"w": torch.full((2,), float(step))},
            optimizer={},
            rng_state=torch.Generator().get_state(),
            run_key={"seed": 0},
        ),
    )


def test_only_replaced_checkpoints_are_uploaded(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "files")
    stored = StoredCheckpoints(storage, JOB, DATA, tmp_path / "a" / "train")
    assert stored.push_changed() == []  # nothing written yet
    _save(stored.train_dir, "high_noise", 10)
    assert stored.push_changed() == ["high_noise"]
    assert stored.push_changed() == []  # unchanged since
    key = f"jobs/{JOB}/checkpoints/high_noise-{DATA[:16]}.pt"
    assert stored.keys[0] == key and storage.exists(key)
    _save(stored.train_dir, "high_noise", 20)
    assert stored.push_changed() == ["high_noise"]
    storage.copy_to(key, tmp_path / "copy.pt")
    assert checkpoint_step(tmp_path / "copy.pt") == 20


def test_a_stored_checkpoint_is_brought_back_unless_the_local_one_is_further(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "files")
    a = StoredCheckpoints(storage, JOB, DATA, tmp_path / "a" / "train")
    _save(a.train_dir, "high_noise", 20)
    _save(a.train_dir, "low_noise", 10)
    a.push_changed()

    b = StoredCheckpoints(storage, JOB, DATA, tmp_path / "b" / "train")
    _save(b.train_dir, "low_noise", 30)  # this node got further with low_noise before it stopped
    assert b.pull() == {"high_noise": 20}
    assert checkpoint_step(checkpoint_path(b.train_dir, "high_noise")) == 20
    assert checkpoint_step(checkpoint_path(b.train_dir, "low_noise")) == 30
    assert b.push_changed() == ["low_noise"]  # the pulled one is not uploaded again; the further one is
    assert sorted(p.name for p in (b.train_dir / "checkpoints").iterdir()) == [
        "high_noise.pt",
        "low_noise.pt",
    ]

    other_data = StoredCheckpoints(storage, JOB, "cd" * 32, tmp_path / "c" / "train")
    assert other_data.pull() == {}  # a ZIP with other bytes: no checkpoint of this one

    b.delete()
    assert not any(storage.exists(k) for k in b.keys)
    assert not (tmp_path / "files" / "jobs" / JOB).exists()


def test_an_upload_that_fails_warns_and_training_goes_on(tmp_path: Path) -> None:
    class Down(LocalStorage):
        def put_file(self, key: str, src_path: Path) -> None:
            raise StorageUnavailable(f"object storage unavailable for storage key {key!r}: SlowDown")

    warnings: list[str] = []
    stored = StoredCheckpoints(Down(tmp_path / "files"), JOB, DATA, tmp_path / "a" / "train")
    _save(stored.train_dir, "high_noise", 10)
    assert stored.push_changed(warn=warnings.append) == []
    assert stored.push_changed(warn=warnings.append) == []  # not retried every step
    assert len(warnings) == 1
    assert warnings[0].startswith("the high_noise checkpoint was not stored (training goes on): ")


def test_a_storage_outage_while_pulling_is_raised(tmp_path: Path) -> None:
    class Down(LocalStorage):
        def copy_to(self, key: str, dest: Path) -> int:
            raise StorageUnavailable("object storage unavailable")

    with pytest.raises(StorageUnavailable):
        StoredCheckpoints(Down(tmp_path / "files"), JOB, DATA, tmp_path / "a" / "train").pull()


@pytest.mark.parametrize(("reason", "uploaded"), [(None, True), (StopReason.LEASE_LOST, False)])
def test_a_worker_that_lost_its_lease_uploads_no_checkpoint(
    settings: Settings,
    db: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    reason: StopReason | None,
    uploaded: bool,
) -> None:
    """Once another worker owns the job, its checkpoints are the ones that count."""
    data = "data:application/zip;base64," + base64.b64encode(b"PK not really").decode()
    row = jobs.create_prediction(
        db, model=TRAINER, kind="train", input={"data": data}, server_base="http://h", max_attempts=1
    )

    def one_checkpoint(loaded: Any, zip_path: Path, work_dir: Path, *a: Any, **kw: Any) -> Any:
        _save(work_dir / "train", "high_noise", 10)
        kw["on_progress"](TrainProgress("high_noise", 10, 50, 0.5, 1.0))
        return fake_training(zip_path, work_dir, output_stem=kw["output_stem"])

    monkeypatch.setattr(train_task, "train_from_zip", one_checkpoint)
    storage = LocalStorage(settings.storage_dir)
    lease = SimpleNamespace(reason=reason, should_stop=lambda: False, db=db, worker_id="w")
    ctx = JobContext(
        settings=settings,
        storage=storage,
        prediction=row,
        lease=lease,  # type: ignore[arg-type]
        progress=ProgressReporter(db, row.id, "w"),
        job_dir=tmp_path / "job",
    )
    train_task.run_train(ctx, loaded=None)  # type: ignore[arg-type]
    assert len(ctx.scratch_keys) == 2
    assert storage.exists(ctx.scratch_keys[0]) is uploaded
