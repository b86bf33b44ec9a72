"""A ready worker reports its attention backend in its row's `detail` (read by /health)."""

from __future__ import annotations

from wanforge.config import Settings
from wanforge.store.db import Database
from wanforge.store.tables import Worker
from wanforge.store.workers import attention_backend_of
from wanforge.worker.loop import WorkerLoop
from wanforge.worker.tasks import TaskTable


def test_the_ready_row_names_the_backend(settings: Settings, db: Database) -> None:
    def loader(_settings: Settings) -> TaskTable:
        tasks = TaskTable()
        tasks.detail = "attention_backend=_native_cudnn"
        return tasks

    loop = WorkerLoop(settings, db, worker_id="w-1", loader=loader)
    assert loop.load() is True
    with db.session() as s:
        row = s.get(Worker, "w-1")
        assert row is not None and row.state == "ready"
        assert attention_backend_of(row.detail) == "_native_cudnn"


def test_the_detail_names_the_fp8_and_compile_modes_chosen(settings: Settings) -> None:
    from functools import partial

    from wanforge.worker.tasks import build_tasks

    settings.fp8, settings.compile, settings.compile_backend = "auto", "regional", "aot_eager"
    tasks = build_tasks(settings)
    # `auto` resolved (off on the CPU); the attention backend still parses first
    assert tasks.detail == "attention_backend=native fp8=off compile=regional"
    assert attention_backend_of(tasks.detail) == "native"
    train = tasks["train"]
    assert isinstance(train, partial) and train.keywords["options"] == ["WANFORGE_COMPILE"]
