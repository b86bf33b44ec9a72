"""LoRA affinity in the worker: after a job with a LoRA, the worker holds it loaded and takes the
next job naming it before an older job, until the older one has waited `affinity_wait_s`."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from tests.engine.lora_files import random_lora, write_wanforge
from tests.worker.generate_kit import RecordingEngine, png_data_uri
from wanforge.config import Settings
from wanforge.engine.adapters import held_files
from wanforge.store import jobs
from wanforge.store.db import Database
from wanforge.vocabulary import Status
from wanforge.worker.affinity import HeldLoras
from wanforge.worker.generate_task import run_generate
from wanforge.worker.loop import WorkerLoop
from wanforge.worker.tasks import TaskTable

LORA_MODEL = "wavespeed-ai/wan-2.2/image-to-video-lora"


def _submit(db: Database, *paths: str) -> str:
    body = {
        "image": png_data_uri(),
        "prompt": "the camera pans left",
        "seed": 7,
        "loras": [{"path": p, "scale": 1.0} for p in paths],
    }
    return jobs.create_prediction(
        db, model=LORA_MODEL, kind="generate", input=body, server_base="http://h", max_attempts=3
    ).id


@pytest.fixture
def worker(settings: Settings, db: Database, tmp_path: Path) -> WorkerLoop:
    lora_dir = tmp_path / "loras"
    lora_dir.mkdir()
    write_wanforge(random_lora(1), lora_dir / "style.safetensors")
    write_wanforge(random_lora(2), lora_dir / "other.safetensors")
    settings.lora_dir = lora_dir
    settings.affinity_wait_s = 3600.0  # jobs made now by this host's clock: none has waited that long
    engine = RecordingEngine()
    held = HeldLoras(partial(held_files, engine.engine.adapters))
    loop = WorkerLoop(settings, db)
    tasks = TaskTable({"generate": partial(run_generate, engine=engine, held=held)})  # type: ignore[arg-type]
    tasks.held_loras = held
    loop.tasks = tasks
    return loop


def test_a_worker_prefers_the_job_naming_the_lora_it_holds(worker: WorkerLoop, db: Database) -> None:
    first = _submit(db, " style.safetensors ")
    row = worker.claim()
    assert row is not None and row.id == first
    worker.run_job(row)
    done = jobs.get_prediction(db, first)
    assert done is not None
    assert done.status == Status.COMPLETED, done.error
    assert worker.tasks.held_loras.identities() == frozenset({"style.safetensors"})  # type: ignore[attr-defined]

    older_other, older_plain = _submit(db, "other.safetensors"), _submit(db)
    again = _submit(db, "style.safetensors")
    claimed = worker.claim()
    assert claimed is not None and claimed.id == again
    by_another = jobs.claim_next(db, "another", 30, ("generate",))  # a worker holding none: FIFO
    assert by_another is not None and by_another.id == older_other
    left = worker.claim()
    assert left is not None and left.id == older_plain


def test_affinity_off_is_fifo(worker: WorkerLoop, db: Database) -> None:
    held = HeldLoras(lambda: frozenset({"a" * 64}))
    held.note([("style.safetensors", "a" * 64)])
    worker.tasks.held_loras = held  # type: ignore[attr-defined]
    plain, styled = _submit(db), _submit(db, "style.safetensors")
    row = worker.claim()
    assert row is not None and row.id == styled  # affinity on (WANFORGE_AFFINITY_WAIT_S 3600)
    worker.settings.affinity_wait_s = 0.0
    _submit(db, "style.safetensors")
    row = worker.claim()
    assert row is not None and row.id == plain  # 0: strict FIFO, the older job without LoRAs first
