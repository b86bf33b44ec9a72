"""Progress reports from a running job to its prediction row, throttled."""

from __future__ import annotations

import time
from typing import Any

from wanforge.store import jobs
from wanforge.store.db import Database

MIN_INTERVAL_S = 0.25


class ProgressReporter:
    def __init__(self, db: Database, prediction_id: str, worker_id: str) -> None:
        self.db = db
        self.prediction_id = prediction_id
        self.worker_id = worker_id
        self._last = 0.0
        self._started = time.monotonic()

    def report(self, stage: str, step: int, total: int, *, force: bool = False, **extra: Any) -> None:
        now = time.monotonic()
        if not force and step < total and now - self._last < MIN_INTERVAL_S:
            return
        self._last = now
        progress: dict[str, Any] = {
            "stage": stage,
            "step": step,
            "total": total,
            "percent": round(100.0 * step / total, 1) if total else 0.0,
            "elapsed_s": round(now - self._started, 1),
            **extra,
        }
        jobs.set_progress(self.db, self.prediction_id, self.worker_id, progress)

    def log(self, *lines: str) -> None:
        jobs.append_logs(self.db, self.prediction_id, self.worker_id, list(lines))
