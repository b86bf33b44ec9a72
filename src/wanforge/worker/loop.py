"""The worker process: owns the model, claims jobs from the store, runs them, reports back."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import socket
import threading
import time
import traceback
from typing import Any

from wanforge.config import Settings
from wanforge.media.storage import LocalStorage
from wanforge.store import jobs
from wanforge.store.db import Database
from wanforge.store.tables import Prediction
from wanforge.store.workers import report_state, touch
from wanforge.worker.context import JobContext, Task, TaskError, TaskStopped
from wanforge.worker.lease import Lease, StopReason
from wanforge.worker.progress import ProgressReporter

log = logging.getLogger("wanforge.worker")

IDLE_TOUCH_S = 5.0


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class WorkerLoop:
    """Claim -> run -> complete/fail, until told to stop. One job at a time per worker."""

    def __init__(self, settings: Settings, db: Database, worker_id: str | None = None) -> None:
        self.settings = settings
        self.db = db
        self.storage = LocalStorage(settings.storage_dir)
        self.worker_id = worker_id or new_worker_id()
        self.shutdown = threading.Event()
        self.tasks: dict[str, Task] = {}

    def install_signal_handlers(self) -> None:
        def _stop(signum: int, _frame: Any) -> None:
            log.info("worker %s: signal %d, stopping after releasing its job", self.worker_id, signum)
            self.shutdown.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)

    def watch_parent(self, parent_pid: int, interval_s: float = 1.0) -> None:
        """Stop (releasing the job) when the supervising process is gone, so no worker is orphaned."""

        def _watch() -> None:
            while not self.shutdown.wait(interval_s):
                if os.getppid() != parent_pid:
                    log.warning("worker %s: supervisor %d is gone, stopping", self.worker_id, parent_pid)
                    self.shutdown.set()

        threading.Thread(target=_watch, name="parent-watch", daemon=True).start()

    def load(self) -> bool:
        """Load the model and register the tasks; report loading/ready/failed for /health."""
        report_state(self.db, self.worker_id, "loading", model=self.settings.model)
        try:
            from wanforge.worker.tasks import build_tasks

            self.tasks = build_tasks(self.settings)
        except Exception as exc:
            log.exception("worker %s: model failed to load", self.worker_id)
            report_state(
                self.db,
                self.worker_id,
                "failed",
                model=self.settings.model,
                detail=f"{type(exc).__name__}: {exc}",
            )
            return False
        report_state(self.db, self.worker_id, "ready", model=self.settings.model)
        return True

    def run_forever(self, *, max_jobs: int | None = None) -> None:
        ok = self.load()
        done = 0
        last_touch = 0.0
        while not self.shutdown.is_set():
            if time.monotonic() - last_touch > IDLE_TOUCH_S:
                touch(self.db, self.worker_id, None)
                last_touch = time.monotonic()
            row = (
                jobs.claim_next(self.db, self.worker_id, self.settings.lease_s, tuple(self.tasks))
                if ok
                else None
            )
            if row is None:
                self.shutdown.wait(self.settings.poll_interval_s)
                continue
            self.run_job(row)
            done += 1
            if max_jobs is not None and done >= max_jobs:
                break
        report_state(self.db, self.worker_id, "stopped", model=self.settings.model)

    def run_job(self, row: Prediction) -> None:
        task = self.tasks[row.kind]
        touch(self.db, self.worker_id, row.id)
        reporter = ProgressReporter(self.db, row.id, self.worker_id)
        started = time.monotonic()
        with Lease(self.db, row.id, self.worker_id, self.settings.lease_s, self.shutdown) as lease:
            ctx = JobContext(
                settings=self.settings,
                storage=self.storage,
                prediction=row,
                lease=lease,
                progress=reporter,
                job_dir=self.settings.jobs_dir / row.id,
            )
            reporter.log(f"attempt {row.attempts} on worker {self.worker_id}")
            try:
                outcome = task(ctx)
            except TaskStopped:
                self._stopped(row, lease.reason)
                if lease.reason is StopReason.CANCELLED:
                    shutil.rmtree(ctx.job_dir, ignore_errors=True)
            except TaskError as exc:
                jobs.fail(self.db, row.id, self.worker_id, code=exc.code, error=exc.message)
                shutil.rmtree(ctx.job_dir, ignore_errors=True)
            except Exception as exc:
                log.exception("job %s failed", row.id)
                reporter.log(*traceback.format_exc().splitlines()[-20:])
                jobs.fail(
                    self.db,
                    row.id,
                    self.worker_id,
                    code=1403,
                    error=f"task execution failed: {type(exc).__name__}: {exc}",
                )
                shutil.rmtree(ctx.job_dir, ignore_errors=True)
            else:
                if lease.reason is StopReason.LEASE_LOST or not jobs.complete(
                    self.db,
                    row.id,
                    self.worker_id,
                    outputs=outcome.outputs,
                    result={**(row.result or {}), **outcome.result},
                    inference_ms=int((time.monotonic() - started) * 1000),
                ):
                    # another worker owns the job now: its outputs count, ours are dropped
                    for key in outcome.outputs:
                        self.storage.delete(key)
        touch(self.db, self.worker_id, None)

    def _stopped(self, row: Prediction, reason: StopReason | None) -> None:
        if reason is StopReason.CANCELLED:
            jobs.mark_cancelled(self.db, row.id, self.worker_id)
        elif reason is StopReason.SHUTDOWN:
            jobs.release(self.db, row.id, self.worker_id)
        # LEASE_LOST: the job belongs to another worker; leave it alone
