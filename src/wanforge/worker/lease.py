"""A job's lease, kept alive by a heartbeat thread while the job runs.

`should_stop()` is what long work polls between steps: it turns true when the client asked to
cancel, when this worker lost the lease (another worker took the job over), when the worker
is shutting down, or when the store has been unreachable for `store_retry_s` (the job is then
given back, its attempt not counted). While the store is only locked for a while, the work goes
on: heartbeats are retried, and the lease is kept as long as no other worker took the job.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from enum import StrEnum

from wanforge.store import jobs
from wanforge.store.db import Database
from wanforge.store.workers import touch
from wanforge.worker.gpu import gpu_memory

CANCEL_POLL_S = 0.5

log = logging.getLogger("wanforge.worker")


class StopReason(StrEnum):
    CANCELLED = "cancelled"
    LEASE_LOST = "lease_lost"
    SHUTDOWN = "shutdown"
    STORE_UNAVAILABLE = "store_unavailable"


class Lease:
    def __init__(
        self,
        db: Database,
        prediction_id: str,
        worker_id: str,
        lease_s: float,
        shutdown: threading.Event,
        *,
        store_retry_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.store_retry_s = store_retry_s
        self.clock = clock
        self.prediction_id = prediction_id
        self.worker_id = worker_id
        self.lease_s = lease_s
        self.shutdown = shutdown
        self.reason: StopReason | None = None
        self._done = threading.Event()
        self._last_cancel_check = float("-inf")
        # the beat runs in the creator's context: its log lines carry the job's prediction id
        self._thread = threading.Thread(
            target=contextvars.copy_context().run,
            args=(self._beat,),
            name=f"lease-{prediction_id}",
            daemon=True,
        )

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        interval = max(0.2, self.lease_s / 3)
        last_ok = self.clock()
        while not self._done.wait(interval):
            try:
                owned = jobs.heartbeat(self.db, self.prediction_id, self.worker_id, self.lease_s)
                # /health: this worker is alive; /metrics: its GPU memory
                touch(self.db, self.worker_id, self.prediction_id, gpu_memory())
            except Exception:  # a locked or unreachable store: the lease is ours until taken over
                down_s = self.clock() - last_ok
                log.warning(
                    "heartbeat for %s failed (store down %.1fs)", self.prediction_id, down_s, exc_info=True
                )
                if down_s < self.store_retry_s:
                    continue
                log.error(
                    "job %s: the store was unavailable for %.0fs; giving the job back",
                    self.prediction_id,
                    down_s,
                )
                self.reason = self.reason or StopReason.STORE_UNAVAILABLE
                return
            if not owned:
                self.reason = self.reason or StopReason.LEASE_LOST
                return
            last_ok = self.clock()

    def should_stop(self) -> bool:
        if self.reason is not None:
            return True
        if self.shutdown.is_set():
            self.reason = StopReason.SHUTDOWN
            return True
        now = self.clock()
        if now - self._last_cancel_check >= CANCEL_POLL_S:
            self._last_cancel_check = now
            try:
                if jobs.is_cancel_requested(self.db, self.prediction_id):
                    self.reason = StopReason.CANCELLED
            except Exception:  # checked again in CANCEL_POLL_S; the heartbeat guards the lease
                log.warning("cancel check for %s failed", self.prediction_id, exc_info=True)
        return self.reason is not None
