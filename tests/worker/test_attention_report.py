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
