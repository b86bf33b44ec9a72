"""Worker rows: each worker process reports its state here; /health reads them."""

from __future__ import annotations

import os
import socket

from sqlalchemy import select

from wanforge.store.clock import DbNow
from wanforge.store.db import Database, utcnow
from wanforge.store.tables import Worker
from wanforge.vocabulary import WorkerState

# a ready worker's `detail` names its attention backend this way (read back by /health)
ATTENTION_DETAIL = "attention_backend="


def attention_detail(backend: str) -> str:
    return f"{ATTENTION_DETAIL}{backend}"


def attention_backend_of(detail: str | None) -> str | None:
    """The attention backend a ready worker reported in its `detail`, if any."""
    if detail and detail.startswith(ATTENTION_DETAIL):
        return detail.removeprefix(ATTENTION_DETAIL).split()[0] or None
    return None


def host_label() -> str:
    """This machine's name as worker ids use it (short enough for the id column)."""
    return socket.gethostname()[:40]


def report_state(
    db: Database,
    worker_id: str,
    state: WorkerState,
    *,
    model: str = "",
    detail: str = "",
    job: str | None = None,
) -> None:
    now = utcnow()
    with db.session() as s:
        row = s.get(Worker, worker_id)
        if row is None:
            row = Worker(id=worker_id, started_at=now, pid=os.getpid())
            s.add(row)
        row.state = state
        row.model = model or row.model or ""
        row.detail = detail
        row.heartbeat_at = DbNow()  # the database's clock, as leases
        row.current_job = job


def touch(db: Database, worker_id: str, job: str | None, gpu_memory: dict[str, int] | None = None) -> None:
    """The worker is alive (and running `job`); `gpu_memory`, when given, replaces what it reported."""
    with db.session() as s:
        row = s.get(Worker, worker_id)
        if row is not None:
            row.heartbeat_at = DbNow()
            row.current_job = job
            if gpu_memory is not None:
                row.gpu_memory = gpu_memory


def live_workers(db: Database, stale_after_s: float) -> list[Worker]:
    """Workers that reported within `stale_after_s` seconds of the database's clock, newest first."""
    cutoff = DbNow(-stale_after_s)
    with db.session() as s:
        return list(
            s.scalars(
                select(Worker)
                .where(Worker.heartbeat_at >= cutoff, Worker.state != WorkerState.STOPPED)
                .order_by(Worker.started_at.desc())
            )
        )


def mark_process_gone(db: Database, hostname: str, pid: int, detail: str) -> None:
    """A supervisor saw worker process `pid` on `hostname` exit: it no longer counts as live."""
    with db.session() as s:
        for row in s.scalars(select(Worker).where(Worker.pid == pid, Worker.state != WorkerState.STOPPED)):
            if row.id.startswith(f"{hostname}-{pid}-"):
                row.state = WorkerState.STOPPED
                row.detail = detail
                row.current_job = None
