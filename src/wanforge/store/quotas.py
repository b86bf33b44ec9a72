"""Admission of a new prediction: a key's submissions per minute, its jobs at once and waiting,
the server's queue.

Counted in the store, so the limits hold across any number of API processes. The check runs in
the transaction that inserts the prediction and begins by writing the key's own row (its rate
counter): on PostgreSQL that row lock makes one key's submissions take turns, on SQLite the write
takes the database lock; so two submissions of one key never both see room for one more job.
(The server-wide queue cap is counted the same way, but submissions of different keys do not
wait for each other: under a burst it can be overshot by a few.)

The server's queue cap never refuses a key that has nothing waiting: one key filling the queue
cannot lock the others out (each key's own cap, `key_max_queued`, keeps one key from filling
it in the first place). The queue can so hold up to one job per key more than the cap.

The rate is a fixed window: at most `rpm` submissions in each calendar minute (UTC). A refused
submission does not count (its transaction is rolled back), and deleting predictions gives
nothing back: the counter lives on the key, not in the predictions table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from wanforge.store.tables import ApiKey, Prediction
from wanforge.vocabulary import ACTIVE, Status

WINDOW = timedelta(minutes=1)


@dataclass(frozen=True)
class Limits:
    """Limits for one submission; 0 = unlimited."""

    rpm: int
    concurrency: int
    max_queued: int
    # Retry-After when a slot frees at an unknown time (a running job ends, the queue drains)
    retry_after_s: int
    key_max_queued: int = 0  # the key's own predictions waiting in the queue


class Limit(StrEnum):
    RATE = "rate"
    CONCURRENCY = "concurrency"
    KEY_QUEUE = "key_queue"  # the key's own waiting predictions (429)
    QUEUE = "queue"  # the server's (503)


class OverLimit(Exception):
    def __init__(self, limit: Limit, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.message = message
        self.retry_after_s = retry_after_s


class KeyRevoked(Exception):
    """The key was revoked after the API process checked it (it keeps a checked key a moment)."""


def window_start(now: datetime) -> datetime:
    return now.replace(second=0, microsecond=0)


def admit(s: Session, key_id: str, limits: Limits, now: datetime) -> None:
    """Count one submission of `key_id` in `s` or raise OverLimit (the caller's transaction then
    rolls back, so a refused submission counts for nothing)."""
    window = window_start(now)
    s.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id)
        .values(
            rate_count=case((ApiKey.rate_window == window, ApiKey.rate_count + 1), else_=1),
            rate_window=window,
        )
    )
    # read after the write above: a revocation (which writes this row too) is over or waits
    key = s.execute(select(ApiKey.rate_count, ApiKey.revoked_at).where(ApiKey.id == key_id)).first()
    if key is not None and key.revoked_at is not None:
        raise KeyRevoked(key_id)
    if limits.rpm and key is not None and key.rate_count > limits.rpm:
        wait = max(1, math.ceil((window + WINDOW - now).total_seconds()))
        raise OverLimit(
            Limit.RATE,
            f"rate limit reached: this key may submit {limits.rpm} predictions per minute; retry after {wait} s",
            wait,
        )
    if limits.concurrency:
        active = s.scalar(
            select(func.count())
            .select_from(Prediction)
            .where(Prediction.api_key_id == key_id, Prediction.status.in_(sorted(ACTIVE)))
        )
        if (active or 0) >= limits.concurrency:
            raise OverLimit(
                Limit.CONCURRENCY,
                f"concurrency limit reached: this key may have {limits.concurrency} predictions "
                f"queued or running at once; retry after {limits.retry_after_s} s, or cancel one",
                limits.retry_after_s,
            )
    if not (limits.key_max_queued or limits.max_queued):
        return
    waiting = (
        s.scalar(
            select(func.count())
            .select_from(Prediction)
            .where(Prediction.api_key_id == key_id, Prediction.status == Status.CREATED)
        )
        or 0
    )
    if limits.key_max_queued and waiting >= limits.key_max_queued:
        raise OverLimit(
            Limit.KEY_QUEUE,
            f"queue limit reached: this key may have {limits.key_max_queued} predictions waiting in "
            f"the queue; retry after {limits.retry_after_s} s, or cancel one",
            limits.retry_after_s,
        )
    if limits.max_queued and waiting:
        queued = s.scalar(
            select(func.count()).select_from(Prediction).where(Prediction.status == Status.CREATED)
        )
        if (queued or 0) >= limits.max_queued:
            raise OverLimit(
                Limit.QUEUE,
                f"the server's queue is full ({limits.max_queued} predictions waiting); "
                f"retry after {limits.retry_after_s} s",
                limits.retry_after_s,
            )
