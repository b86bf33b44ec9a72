"""Admission in the store: a key's submissions per minute (a fixed window), its jobs at once, the
server's queue; counted in the store, so two API processes share the counts."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from wanforge.store import jobs
from wanforge.store.db import Database
from wanforge.store.keys import create_key
from wanforge.store.quotas import Limit, Limits, OverLimit

T0 = datetime(2026, 5, 1, 12, 0, 10)


def _submit(db: Database, key_id: str, limits: Limits, now: datetime) -> str:
    return jobs.create_prediction(
        db,
        model="m",
        kind="generate",
        input={},
        server_base="",
        max_attempts=3,
        api_key_id=key_id,
        limits=limits,
        now=now,
    ).id


def _refused(db: Database, key_id: str, limits: Limits, now: datetime) -> OverLimit:
    with pytest.raises(OverLimit) as err:
        _submit(db, key_id, limits, now)
    return err.value


def test_rate_is_counted_per_minute_across_processes(db: Database) -> None:
    key = create_key(db, "a")[1].id
    other = create_key(db, "b")[1].id
    limits = Limits(rpm=2, concurrency=0, max_queued=0, retry_after_s=10)
    second_process = Database(db.url)  # another API process on the same store
    try:
        _submit(db, key, limits, T0)
        _submit(second_process, key, limits, T0 + timedelta(seconds=20))
        over = _refused(db, key, limits, T0 + timedelta(seconds=30))
        assert over.limit is Limit.RATE and over.retry_after_s == 20  # 12:00:40 -> 12:01:00
        assert over.message == (
            "rate limit reached: this key may submit 2 predictions per minute; retry after 20 s"
        )
        # a refused submission is not counted, nor created; another key has its own count
        assert (
            _refused(second_process, key, limits, T0 + timedelta(seconds=39, microseconds=1)).retry_after_s
            == 11
        )
        assert jobs.list_predictions(db, page=1, page_size=10, visible_to=key).total == 2
        _submit(db, other, limits, T0 + timedelta(seconds=30))
        # the next minute starts afresh; deleting predictions gives nothing back
        _submit(db, key, limits, T0 + timedelta(seconds=50))
        _submit(second_process, key, limits, T0 + timedelta(seconds=51))
        assert _refused(db, key, limits, T0 + timedelta(seconds=52)).limit is Limit.RATE
    finally:
        second_process.dispose()


def test_concurrency_counts_queued_and_running_jobs(db: Database) -> None:
    key = create_key(db, "a")[1].id
    limits = Limits(rpm=0, concurrency=2, max_queued=0, retry_after_s=7)
    first = _submit(db, key, limits, T0)
    _submit(db, key, limits, T0)
    assert jobs.claim_next(db, "w", 30, ("generate",)) is not None  # one running, one queued
    over = _refused(db, key, limits, T0)
    assert over.limit is Limit.CONCURRENCY and over.retry_after_s == 7
    assert over.message == (
        "concurrency limit reached: this key may have 2 predictions queued or running at once; "
        "retry after 7 s, or cancel one"
    )
    assert jobs.complete(db, first, "w", outputs=[], result={}, inference_ms=1)
    _submit(db, key, limits, T0)


def test_a_full_queue_refuses_keys_with_jobs_waiting_but_never_a_keys_first(db: Database) -> None:
    a, b = (create_key(db, n)[1].id for n in ("a", "b"))
    limits = Limits(rpm=0, concurrency=0, max_queued=2, retry_after_s=5)
    _submit(db, a, limits, T0)
    _submit(db, a, limits, T0)
    over = _refused(db, a, limits, T0)
    assert over.limit is Limit.QUEUE and over.retry_after_s == 5
    assert over.message == "the server's queue is full (2 predictions waiting); retry after 5 s"
    _submit(db, b, limits, T0)  # A filling the queue does not lock B out: its one job waits
    assert _refused(db, b, limits, T0).limit is Limit.QUEUE
    assert jobs.claim_next(db, "w", 30, ("generate",)) is not None  # running jobs are not queued
    assert jobs.claim_next(db, "w", 30, ("generate",)) is not None
    _submit(db, a, limits, T0)


def test_a_keys_own_queue_cap_refuses_it_alone(db: Database) -> None:
    a, b = (create_key(db, n)[1].id for n in ("a", "b"))
    limits = Limits(rpm=0, concurrency=0, max_queued=100, retry_after_s=5, key_max_queued=2)
    _submit(db, a, limits, T0)
    _submit(db, a, limits, T0)
    over = _refused(db, a, limits, T0)
    assert over.limit is Limit.KEY_QUEUE and over.retry_after_s == 5
    assert over.message == (
        "queue limit reached: this key may have 2 predictions waiting in the queue; "
        "retry after 5 s, or cancel one"
    )
    _submit(db, b, limits, T0 + timedelta(seconds=1))
    _submit(db, b, limits, T0 + timedelta(seconds=1))
    assert jobs.claim_next(db, "w", 30, ("generate",)) is not None  # one of A's starts: room for one
    _submit(db, a, limits, T0)


def test_zero_is_unlimited(db: Database) -> None:
    key = create_key(db, "a")[1].id
    limits = Limits(rpm=0, concurrency=0, max_queued=0, retry_after_s=5)
    for _ in range(5):
        _submit(db, key, limits, T0)
