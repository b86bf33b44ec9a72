"""A job's lease, kept alive by a heartbeat thread while the job runs.

`should_stop()` is what long work polls between steps: it turns true when the client asked to
cancel, when this worker lost the lease (another worker took the job over), or when the worker
is shutting down.
"""

from __future__ import annotations

import logging
import threading
import time
from enum import StrEnum

from wanforge.store import jobs
from wanforge.store.db import Database
from wanforge.store.workers import touch

CANCEL_POLL_S = 0.5

log = logging.getLogger("wanforge.worker")


class StopReason(StrEnum):
    CANCELLED = "cancelled"
    LEASE_LOST = "lease_lost"
    SHUTDOWN = "shutdown"


class Lease:
    def __init__(
        self,
        db: Database,
        prediction_id: str,
        worker_id: str,
        lease_s: float,
        shutdown: threading.Event,
    ) -> None:
        self.db = db
        self.prediction_id = prediction_id
        self.worker_id = worker_id
        self.lease_s = lease_s
        self.shutdown = shutdown
        self.reason: StopReason | None = None
        self._done = threading.Event()
        self._last_cancel_check = 0.0
        self._thread = threading.Thread(target=self._beat, name=f"lease-{prediction_id}", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        interval = max(0.2, self.lease_s / 3)
        last_ok = time.monotonic()
        while not self._done.wait(interval):
            try:
                owned = jobs.heartbeat(self.db, self.prediction_id, self.worker_id, self.lease_s)
                touch(self.db, self.worker_id, self.prediction_id)  # /health: this worker is alive
            except Exception:  # a locked or unreachable store: retry until the lease would be gone
                log.warning("heartbeat for %s failed", self.prediction_id, exc_info=True)
                if time.monotonic() - last_ok < self.lease_s:
                    continue
                owned = False
            if not owned:
                self.reason = self.reason or StopReason.LEASE_LOST
                return
            last_ok = time.monotonic()

    def should_stop(self) -> bool:
        if self.reason is not None:
            return True
        if self.shutdown.is_set():
            self.reason = StopReason.SHUTDOWN
            return True
        now = time.monotonic()
        if now - self._last_cancel_check >= CANCEL_POLL_S:
            self._last_cancel_check = now
            try:
                if jobs.is_cancel_requested(self.db, self.prediction_id):
                    self.reason = StopReason.CANCELLED
            except Exception:  # checked again in CANCEL_POLL_S; the heartbeat guards the lease
                log.warning("cancel check for %s failed", self.prediction_id, exc_info=True)
        return self.reason is not None
