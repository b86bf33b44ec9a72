"""Progress reports and job-log lines from a running job to its prediction row.

Both are best effort: a locked or unreachable store must not stop the work (the lease's
heartbeat decides whether the job still belongs to this worker). A progress report that cannot
be written is dropped (the next one replaces it anyway); log lines wait and go out with the next
write. Every line is scrubbed of server paths before a client can read it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from wanforge.store import jobs
from wanforge.store.db import Database
from wanforge.worker.retry import TRANSIENT_STORE_ERRORS
from wanforge.worker.scrub import scrub_paths

MIN_INTERVAL_S = 0.25
MAX_PENDING_LINES = 500

log = logging.getLogger("wanforge.worker")


class ProgressReporter:
    def __init__(
        self,
        db: Database,
        prediction_id: str,
        worker_id: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.prediction_id = prediction_id
        self.worker_id = worker_id
        self.clock = clock
        self._last = float("-inf")
        self._started = clock()
        self._pending: list[str] = []

    def report(self, stage: str, step: int, total: int, *, force: bool = False, **extra: Any) -> None:
        now = self.clock()
        if not force and step < total and now - self._last < MIN_INTERVAL_S:
            return
        progress: dict[str, Any] = {
            "stage": stage,
            "step": step,
            "total": total,
            "percent": round(100.0 * step / total, 1) if total else 0.0,
            "elapsed_s": round(now - self._started, 1),
            **extra,
        }
        try:
            jobs.set_progress(self.db, self.prediction_id, self.worker_id, progress)
        except TRANSIENT_STORE_ERRORS as exc:
            log.warning("job %s: progress not written (store unavailable): %s", self.prediction_id, exc)
            return
        self._last = now
        self.flush()  # log lines that waited for the store

    def log(self, *lines: str) -> None:
        self._pending = [*self._pending, *(scrub_paths(line) for line in lines)][-MAX_PENDING_LINES:]
        self.flush()

    def flush(self) -> bool:
        """Write the lines still waiting; False when the store refused them (they keep waiting)."""
        if not self._pending:
            return True
        try:
            jobs.append_logs(self.db, self.prediction_id, self.worker_id, self._pending)
        except TRANSIENT_STORE_ERRORS as exc:
            log.warning("job %s: log lines kept for later (store unavailable): %s", self.prediction_id, exc)
            return False
        self._pending = []
        return True
