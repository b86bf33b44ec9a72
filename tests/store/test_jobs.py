"""Job claiming with leases: one owner at a time, expiry, bounded attempts, exactly-once outcome."""

from __future__ import annotations

import threading
from datetime import timedelta

from wanforge.store import jobs
from wanforge.store.db import Database, utcnow
from wanforge.vocabulary import ErrorCode


def _new(db: Database, max_attempts: int = 3) -> str:
    return jobs.create_prediction(
        db, model="m", kind="generate", input={"x": 1}, server_base="http://h", max_attempts=max_attempts
    ).id


def test_claim_order_and_single_owner(db: Database) -> None:
    first, second = _new(db), _new(db)
    a = jobs.claim_next(db, "A", 30, ("generate",))
    b = jobs.claim_next(db, "B", 30, ("generate",))
    assert a is not None and b is not None
    assert (a.id, b.id) == (first, second)
    assert a.status == "processing" and a.attempts == 1 and a.lease_owner == "A"
    assert jobs.claim_next(db, "C", 30, ("generate",)) is None
    assert jobs.claim_next(db, "C", 30, ("train",)) is None


def test_concurrent_claims_never_share_a_job(db: Database) -> None:
    ids = {_new(db) for _ in range(20)}
    claimed: list[str] = []
    lock = threading.Lock()

    def grab(worker: str) -> None:
        while (row := jobs.claim_next(db, worker, 30, ("generate",))) is not None:
            with lock:
                claimed.append(row.id)

    threads = [threading.Thread(target=grab, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids)


def test_expired_lease_is_reclaimed_and_old_owner_cannot_finish(db: Database) -> None:
    pid = _new(db)
    t0 = utcnow()
    assert jobs.claim_next(db, "A", 10, ("generate",), now=t0) is not None
    assert jobs.claim_next(db, "B", 30, ("generate",), now=t0 + timedelta(seconds=10)) is None
    again = jobs.claim_next(db, "B", 30, ("generate",), now=t0 + timedelta(seconds=10.001))
    assert again is not None and again.id == pid and again.attempts == 2 and again.lease_owner == "B"
    # A woke up late: every write it attempts is refused
    assert not jobs.heartbeat(db, pid, "A", 30)
    assert not jobs.set_progress(db, pid, "A", {"step": 1})
    assert not jobs.complete(db, pid, "A", outputs=["a.mp4"], result={}, inference_ms=1)
    assert jobs.complete(db, pid, "B", outputs=["b.mp4"], result={"seed": 1}, inference_ms=5)
    row = jobs.get_prediction(db, pid)
    assert row is not None and row.status == "completed" and row.outputs == ["b.mp4"]
    assert not jobs.fail(db, pid, "B", code=ErrorCode.TASK_FAILED, error="late")


def test_attempts_are_bounded(db: Database) -> None:
    pid = _new(db, max_attempts=2)
    t0 = utcnow()
    for i, worker in enumerate(("A", "B")):
        assert jobs.claim_next(db, worker, 10, ("generate",), now=t0 + timedelta(seconds=11 * i)) is not None
    assert jobs.claim_next(db, "C", 30, ("generate",), now=t0 + timedelta(seconds=22)) is None
    row = jobs.get_prediction(db, pid)
    assert row is not None and row.status == "failed" and row.error_code == 5000 and row.error


def test_heartbeat_keeps_the_lease(db: Database) -> None:
    pid = _new(db)
    t0 = utcnow()
    assert jobs.claim_next(db, "A", 10, ("generate",), now=t0) is not None
    for i in range(1, 5):  # each beat at 5 s extends the lease to 10 s past it
        assert jobs.heartbeat(db, pid, "A", 10, now=t0 + timedelta(seconds=5 * i))
    assert jobs.claim_next(db, "B", 30, ("generate",), now=t0 + timedelta(seconds=29)) is None
    assert jobs.claim_next(db, "B", 30, ("generate",), now=t0 + timedelta(seconds=30.001)) is not None


def test_cancel_queued_and_running(db: Database) -> None:
    queued, running = _new(db), _new(db)
    row = jobs.claim_next(db, "A", 30, ("generate",))
    assert row is not None and row.id == queued
    # queued (but claimed) -> flagged; the other is still unclaimed -> cancelled at once
    assert jobs.request_cancel(db, running).status == "cancelled"  # type: ignore[union-attr]
    flagged = jobs.request_cancel(db, queued)
    assert flagged is not None and flagged.status == "processing" and flagged.cancel_requested
    assert jobs.is_cancel_requested(db, queued)
    assert jobs.mark_cancelled(db, queued, "A")
    assert jobs.get_prediction(db, queued).status == "cancelled"  # type: ignore[union-attr]


def test_release_gives_the_attempt_back(db: Database) -> None:
    pid = _new(db)
    assert jobs.claim_next(db, "A", 30, ("generate",)) is not None
    assert jobs.release(db, pid, "A")
    row = jobs.claim_next(db, "B", 30, ("generate",))
    assert row is not None and row.id == pid and row.attempts == 1


def test_cancelled_job_of_a_dead_worker_ends_cancelled(db: Database) -> None:
    pid = _new(db)
    t0 = utcnow()
    assert jobs.claim_next(db, "A", 10, ("generate",), now=t0) is not None
    jobs.request_cancel(db, pid)  # flagged; then worker A dies before it sees the flag
    assert jobs.claim_next(db, "B", 30, ("generate",), now=t0 + timedelta(seconds=11)) is None
    row = jobs.get_prediction(db, pid)
    assert row is not None and row.status == "cancelled"


def test_release_of_a_cancelled_job_cancels_it(db: Database) -> None:
    pid = _new(db)
    assert jobs.claim_next(db, "A", 30, ("generate",)) is not None
    jobs.request_cancel(db, pid)
    jobs.release(db, pid, "A")
    assert jobs.get_prediction(db, pid).status == "cancelled"  # type: ignore[union-attr]
