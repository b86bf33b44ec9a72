"""The lease on the injected clock: cancel checks are throttled by it, no sleeping."""

from __future__ import annotations

import threading

from wanforge.store import jobs
from wanforge.store.db import Database
from wanforge.worker.lease import CANCEL_POLL_S, Lease, StopReason


def test_cancel_is_polled_at_most_every_cancel_poll_s(db: Database) -> None:
    pid = jobs.create_prediction(
        db, model="m", kind="generate", input={}, server_base="http://h", max_attempts=3
    ).id
    assert jobs.claim_next(db, "A", 30, ("generate",)) is not None
    now = [100.0]
    lease = Lease(db, pid, "A", 30, threading.Event(), clock=lambda: now[0])  # no heartbeat thread
    assert not lease.should_stop()
    jobs.request_cancel(db, pid)
    now[0] += CANCEL_POLL_S - 0.01
    assert not lease.should_stop()  # not asked again yet
    now[0] += 0.01
    assert lease.should_stop() and lease.reason is StopReason.CANCELLED


def test_shutdown_stops_at_once(db: Database) -> None:
    stop = threading.Event()
    lease = Lease(db, "none", "A", 30, stop, clock=lambda: 0.0)
    stop.set()
    assert lease.should_stop() and lease.reason is StopReason.SHUTDOWN
