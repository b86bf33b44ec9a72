"""Leases run on the database's clock: a worker host whose wall clock is minutes off neither
steals a live lease nor leaves its own lease open for longer (or shorter) than `lease_s`.

The host's wall clock is what `utcnow` answers in the store's modules; `host_clock` moves it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta

import pytest
from sqlalchemy import text

from wanforge.store import db as db_module
from wanforge.store import jobs
from wanforge.store import workers as workers_module
from wanforge.store.clock import database_now
from wanforge.store.db import Database
from wanforge.vocabulary import Status, WorkerState

SKEW = timedelta(minutes=10)
HostClock = Callable[[timedelta], AbstractContextManager[None]]


@pytest.fixture
def host_clock(monkeypatch: pytest.MonkeyPatch) -> HostClock:
    """`with host_clock(offset):` the calls inside run on a host whose wall clock is `offset` off."""
    true_utcnow = db_module.utcnow

    @contextmanager
    def off_by(offset: timedelta) -> Iterator[None]:
        def skewed() -> datetime:
            return true_utcnow() + offset

        with monkeypatch.context() as m:
            for module in (db_module, jobs, workers_module):
                m.setattr(module, "utcnow", skewed, raising=False)
            yield

    return off_by


def _new(db: Database) -> str:
    return jobs.create_prediction(
        db, model="m", kind="generate", input={}, server_base="http://h", max_attempts=3
    ).id


def _lease_left_s(db: Database, pid: str) -> float:
    row = jobs.get_prediction(db, pid)
    assert row is not None and row.lease_expires_at is not None
    return (row.lease_expires_at - database_now(db)).total_seconds()


@pytest.mark.parametrize("skew", [SKEW, -SKEW], ids=["ahead", "behind"])
def test_a_skewed_host_does_not_steal_a_live_lease(
    db: Database, host_clock: HostClock, skew: timedelta
) -> None:
    pid = _new(db)
    assert jobs.claim_next(db, "A", 30, ("generate",)) is not None
    with host_clock(skew):
        assert jobs.claim_next(db, "B", 30, ("generate",)) is None
        assert not jobs.heartbeat(db, pid, "B", 30)
    row = jobs.get_prediction(db, pid)
    assert row is not None and (row.lease_owner, row.attempts) == ("A", 1)


@pytest.mark.parametrize("skew", [SKEW, -SKEW], ids=["ahead", "behind"])
def test_a_skewed_hosts_lease_lasts_lease_s_on_the_database_clock(
    db: Database, host_clock: HostClock, skew: timedelta
) -> None:
    pid = _new(db)
    with host_clock(skew):
        row = jobs.claim_next(db, "B", 30, ("generate",))
        assert row is not None and row.id == pid
        assert 25 < _lease_left_s(db, pid) <= 30
        assert jobs.heartbeat(db, pid, "B", 60)
        assert 55 < _lease_left_s(db, pid) <= 60
    # a host with a true clock can take nothing while the lease lives ...
    assert jobs.claim_next(db, "A", 30, ("generate",)) is None
    # ... and takes the job as soon as it ran out by the database's clock (B died): not stranded
    later = database_now(db) + timedelta(seconds=61)
    again = jobs.claim_next(db, "A", 30, ("generate",), now=later)
    assert again is not None and (again.id, again.lease_owner, again.attempts) == (pid, "A", 2)


def test_a_skewed_host_puts_a_job_back_for_delay_s(db: Database, host_clock: HostClock) -> None:
    pid = _new(db)
    with host_clock(-SKEW):
        assert jobs.claim_next(db, "B", 30, ("generate",)) is not None
        assert jobs.put_back(db, pid, "B", delay_s=20, note="disk full") == 1
        assert 15 < _lease_left_s(db, pid) <= 20
    assert jobs.claim_next(db, "A", 30, ("generate",)) is None
    row = jobs.get_prediction(db, pid)
    assert row is not None and row.status == Status.PROCESSING and row.lease_owner is None


def test_database_now_is_the_databases_clock_not_the_hosts(db: Database, host_clock: HostClock) -> None:
    before = database_now(db)
    with host_clock(SKEW):
        during = database_now(db)
    assert timedelta(0) <= during - before < timedelta(seconds=5)


@pytest.mark.parametrize("skew", [SKEW, -SKEW], ids=["ahead", "behind"])
def test_a_skewed_workers_reports_count_on_the_database_clock(
    db: Database, host_clock: HostClock, skew: timedelta
) -> None:
    with host_clock(skew):
        workers_module.report_state(db, "host-1-a", WorkerState.READY)
    assert [w.id for w in workers_module.live_workers(db, stale_after_s=30)] == ["host-1-a"]
    with host_clock(-skew):  # an API host skewed the other way sees it too
        assert [w.id for w in workers_module.live_workers(db, stale_after_s=30)] == ["host-1-a"]
        workers_module.touch(db, "host-1-a", None)
    assert [w.id for w in workers_module.live_workers(db, stale_after_s=30)] == ["host-1-a"]


def test_postgres_claims_pass_over_a_locked_row(db: Database) -> None:
    """SKIP LOCKED: a row another transaction holds is skipped at once, not waited for."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: no row locks to skip")
    first, second = _new(db), _new(db)
    got: list[str | None] = []
    with db.engine.connect() as holder:
        holder.execute(text("SELECT id FROM predictions WHERE id = :id FOR UPDATE"), {"id": first})
        worker = threading.Thread(
            target=lambda: got.append(getattr(jobs.claim_next(db, "B", 30, ("generate",)), "id", None))
        )
        worker.start()
        worker.join(timeout=20)  # a claim that waited for the lock would still be running
        blocked = worker.is_alive()
        holder.rollback()
    worker.join()
    assert not blocked and got == [second]
