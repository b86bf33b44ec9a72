"""Transient troubles with the store: which errors they are, and retrying a write through them.

A locked SQLite file, a PostgreSQL failover or a dropped connection must not end a job: a
worker retries its writes (with back-off, saying so in its log each time) instead. Written by
hand because the one thing it adds over a retry library is the stop event, which a shutting-down
worker needs to honour at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from wanforge.store.db import STORE_UNAVAILABLE_ERRORS

log = logging.getLogger("wanforge.worker")

T = TypeVar("T")

# "database is locked", a lost or refused connection, a pool with no free connection
TRANSIENT_STORE_ERRORS = STORE_UNAVAILABLE_ERRORS


class StoreUnavailable(Exception):
    """The store stayed unreachable for longer than the worker was willing to wait."""


def retry_store(
    write: Callable[[], T],
    *,
    what: str,
    stop: threading.Event,
    within_s: float | None,
    clock: Callable[[], float] = time.monotonic,
    first_wait_s: float = 0.1,
    max_wait_s: float = 10.0,
) -> T:
    """`write()`, retried through transient store errors.

    Gives up with StoreUnavailable after `within_s` seconds (None: never) or once `stop` is set.
    """
    started = clock()
    wait = first_wait_s
    tries = 0
    while True:
        try:
            return write()
        except TRANSIENT_STORE_ERRORS as exc:
            tries += 1
            elapsed = clock() - started
            log.warning(
                "%s: store unavailable for %.1fs (%d tries): %s",
                what,
                elapsed,
                tries,
                getattr(exc, "orig", None) or exc,
            )
            if within_s is not None and elapsed >= within_s:
                raise StoreUnavailable(f"{what}: the store was unavailable for {elapsed:.0f}s") from exc
            if stop.wait(wait):
                raise StoreUnavailable(f"{what}: stopping while the store is unavailable") from exc
            wait = min(max_wait_s, wait * 2)
