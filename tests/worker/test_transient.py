"""Transient troubles never use up an attempt nor fail a job: a locked store, a full or read-only
disk. Giving up is bounded and said in words a client may read (no server paths)."""

from __future__ import annotations

import errno
import sqlite3
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from wanforge.config import Settings
from wanforge.media.atomic import AtomicFile
from wanforge.store import jobs
from wanforge.store.db import Database, utcnow
from wanforge.store.migrate import upgrade
from wanforge.worker.context import JobContext, TaskOutcome, TaskStopped
from wanforge.worker.loop import WorkerLoop

BUSY_TIMEOUT_MS = 50

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def sqlite_db(settings: Settings) -> Iterator[Database]:
    """SQLite with a 50 ms busy timeout (the server's is 30 s), so a lock outlasts it quickly."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url()
    upgrade(url)
    db = Database(url)

    @event.listens_for(db.engine, "connect")
    def _short_busy_timeout(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

    yield db
    db.dispose()


class StoreLock:
    """A second connection holding `BEGIN EXCLUSIVE` on the SQLite file, as another process might."""

    def __init__(self, settings: Settings) -> None:
        self.path = Path(settings.resolved_database_url().split("///", 1)[1])
        self.conn: sqlite3.Connection | None = None

    def take(self) -> None:
        self.conn = sqlite3.connect(self.path, timeout=5, isolation_level=None, check_same_thread=False)
        self.conn.execute("BEGIN EXCLUSIVE")

    def drop(self) -> None:
        assert self.conn is not None
        self.conn.execute("ROLLBACK")
        self.conn.close()
        self.conn = None


def _submit(db: Database) -> str:
    return jobs.create_prediction(
        db, model="m", kind="generate", input={}, server_base="http://h", max_attempts=3
    ).id


def _run(settings: Settings, db: Database, task: Any, pid: str, **claim: Any) -> WorkerLoop:
    loop = WorkerLoop(settings, db)
    loop.tasks = {"generate": task}
    row = jobs.claim_next(db, loop.worker_id, settings.lease_s, ("generate",), **claim)
    assert row is not None and row.id == pid
    loop.run_job(row)
    return loop


def test_a_store_locked_past_its_busy_timeout_mid_job_does_not_end_the_job(
    settings: Settings, sqlite_db: Database
) -> None:
    lock = StoreLock(settings)

    def task(ctx: JobContext) -> TaskOutcome:
        ctx.progress.report("denoising", 1, 4, force=True)
        lock.take()
        threading.Timer(0.5, lock.drop).start()  # 10x the busy timeout
        ctx.progress.report("denoising", 2, 4, force=True)  # dropped: the next one replaces it
        ctx.progress.log("step 2 done")  # kept, written with the next write
        ctx.remember({"seed": 7})  # retried until the store is back
        ctx.progress.report("denoising", 4, 4, force=True)
        return TaskOutcome(outputs=[], result={"frames": 9})

    pid = _submit(sqlite_db)
    _run(settings, sqlite_db, task, pid)
    row = jobs.get_prediction(sqlite_db, pid)
    assert row is not None
    assert (row.status, row.attempts, row.error, row.error_code) == ("completed", 1, "", None)
    assert row.result == {"seed": 7, "frames": 9}
    assert row.progress["step"] == 4 and row.logs[-1] == "step 2 done"


def test_a_store_locked_for_good_gives_the_job_back_without_counting_the_attempt(
    settings: Settings, sqlite_db: Database
) -> None:
    settings.lease_s = 0.6  # heartbeats every 0.2 s
    settings.store_retry_s = 0.3
    lock = StoreLock(settings)
    reasons: list[object] = []

    def task(ctx: JobContext) -> TaskOutcome:
        lock.take()
        stopped = threading.Event()
        while not stopped.wait(0.02):
            if ctx.lease.should_stop():
                stopped.set()
        reasons.append(ctx.lease.reason)
        lock.drop()  # the store comes back after the worker gave up on the job
        raise TaskStopped("store unavailable")

    pid = _submit(sqlite_db)
    _run(settings, sqlite_db, task, pid)
    assert [str(r) for r in reasons] == ["store_unavailable"]
    row = jobs.get_prediction(sqlite_db, pid)
    assert row is not None
    assert (row.status, row.attempts, row.lease_owner, row.error) == ("created", 0, None, "")


def _read_only(cls: type[AtomicFile], target: Path) -> Any:
    raise OSError(errno.EROFS, "Read-only file system", str(target))


def test_read_only_storage_puts_the_job_back_then_fails_it_with_5003_and_no_path(
    settings: Settings, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(AtomicFile, "begin", classmethod(_read_only))
    settings.storage_retries = 1
    settings.storage_retry_s = 60

    def task(ctx: JobContext) -> TaskOutcome:
        key = ctx.storage.new_key("outputs", "v.mp4")
        ctx.storage.put_bytes(key, b"video")
        return TaskOutcome(outputs=[key], result={})

    pid = _submit(db)
    _run(settings, db, task, pid)
    row = jobs.get_prediction(db, pid)
    assert row is not None
    # put back: not failed, the attempt not counted, waiting 60 s before it runs again
    assert (row.status, row.attempts, row.lease_owner, row.error) == ("processing", 0, None, "")
    assert row.logs[-1] == (
        "storage unavailable: Read-only file system; trying again in 60s (1/1, not counted as an attempt)"
    )
    assert jobs.claim_next(db, "other", 30, ("generate",), now=utcnow() + timedelta(seconds=59)) is None

    _run(settings, db, task, pid, now=utcnow() + timedelta(seconds=61))
    row = jobs.get_prediction(db, pid)
    assert row is not None
    assert (row.status, row.error_code, row.attempts) == ("failed", 5003, 1)
    assert row.error == "storage unavailable: Read-only file system; gave up after 2 tries"
    assert str(settings.data_dir) not in str(row.logs) + row.error


def test_a_crash_reaches_the_client_without_server_paths(settings: Settings, db: Database) -> None:
    secret = settings.data_dir.resolve() / "jobs" / "x" / "latents.pt"

    def task(ctx: JobContext) -> TaskOutcome:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(secret))

    pid = _submit(db)
    _run(settings, db, task, pid)
    row = jobs.get_prediction(db, pid)
    assert row is not None and (row.status, row.error_code) == ("failed", 1403)
    assert (
        row.error
        == "task execution failed: FileNotFoundError: [Errno 2] No such file or directory: 'latents.pt'"
    )
    assert "/" not in "".join(row.logs[1:]) and row.logs[-1] == row.error
