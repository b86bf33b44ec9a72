"""The worker process: owns the model, claims jobs from the store, runs them, reports back."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

from wanforge.config import Settings
from wanforge.logs import prediction_context
from wanforge.media.factory import make_storage
from wanforge.media.storage import Storage
from wanforge.store import jobs, metrics
from wanforge.store.db import Database
from wanforge.store.tables import Prediction
from wanforge.store.workers import host_label, report_state, touch
from wanforge.vocabulary import ErrorCode, WorkerState
from wanforge.worker.affinity import HeldLoras
from wanforge.worker.context import JobContext, Task, TaskError, TaskStopped
from wanforge.worker.gpu import gpu_memory
from wanforge.worker.lease import Lease, StopReason
from wanforge.worker.orphans import sweep_orphaned_outputs, sweep_orphaned_scratch
from wanforge.worker.progress import ProgressReporter
from wanforge.worker.retry import TRANSIENT_STORE_ERRORS, StoreUnavailable, retry_store
from wanforge.worker.scrub import is_storage_error, scrub_paths, storage_problem

log = logging.getLogger("wanforge.worker")

GIVE_BACK_ERRORS: tuple[type[Exception], ...] = (StoreUnavailable, *TRANSIENT_STORE_ERRORS)


ALLOCATOR_SETTING = "PYTORCH_CUDA_ALLOC_CONF"
EXPANDABLE_SEGMENTS = "expandable_segments:True"


def prefer_expandable_segments(environ: MutableMapping[str, str]) -> None:
    """A long-lived worker meets many activation shapes (480p to 1080p, 5 s and 8 s, training
    windows): PyTorch's caching allocator with expandable segments grows one mapping instead of
    leaving fixed-size segments that fragment (PyTorch's "CUDA memory management" notes). Read by
    torch when CUDA first allocates, so it is set before the model loads; an operator's own
    PYTORCH_CUDA_ALLOC_CONF is kept as it is."""
    environ.setdefault(ALLOCATOR_SETTING, EXPANDABLE_SEGMENTS)


def _build_tasks(settings: Settings) -> dict[str, Task]:
    prefer_expandable_segments(os.environ)
    from wanforge.worker.tasks import build_tasks  # imports torch: only in the worker process

    return build_tasks(settings)


def new_worker_id() -> str:
    return f"{host_label()}-{os.getpid()}-{secrets.token_hex(3)}"


class WorkerLoop:
    """Claim -> run -> complete/fail, until told to stop. One job at a time per worker."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        worker_id: str | None = None,
        loader: Callable[[Settings], dict[str, Task]] | None = None,
    ) -> None:
        self.settings = settings
        self.loader = loader or _build_tasks
        self.db = db
        self.storage: Storage = make_storage(settings)
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
        report_state(self.db, self.worker_id, WorkerState.LOADING, model=self.settings.model)
        try:
            with self._alive_while_loading():
                self.tasks = self.loader(self.settings)
        except Exception as exc:
            log.exception("worker %s: model failed to load", self.worker_id)
            report_state(
                self.db,
                self.worker_id,
                WorkerState.FAILED,
                model=self.settings.model,
                detail=scrub_paths(f"{type(exc).__name__}: {exc}"),
            )
            return False
        wanted = set(self.settings.worker_tasks.split(","))  # WANFORGE_WORKER_TASKS
        for kind in [k for k in self.tasks if k not in wanted]:
            del self.tasks[kind]  # never claimed here
        detail = getattr(self.tasks, "detail", "")  # how it runs (tasks.TaskTable): the attention backend
        report_state(self.db, self.worker_id, WorkerState.READY, model=self.settings.model, detail=detail)
        return True

    @contextlib.contextmanager
    def _alive_while_loading(self) -> Iterator[None]:
        """Touch the worker row every `worker_touch_s` while the model loads (minutes for 14B),
        so /health keeps saying `loading` instead of taking the worker for gone."""
        done = threading.Event()

        def _beat() -> None:
            while not done.wait(self.settings.worker_touch_s):
                try:
                    touch(self.db, self.worker_id, None)
                except Exception:  # a locked store: the next beat tries again
                    log.warning("worker %s: heartbeat while loading failed", self.worker_id, exc_info=True)

        thread = threading.Thread(target=_beat, name="load-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(timeout=5)

    def sweep(self) -> None:
        """Remove unfinished writes a killed worker left in storage (older than `stale_tmp_s`),
        and the scratch of jobs that ended without their worker deleting it (`worker/orphans.py`)."""
        try:
            removed = self.storage.sweep_unfinished(self.settings.stale_tmp_s, time.time())
        except OSError:
            log.warning("worker %s: storage sweep failed", self.worker_id, exc_info=True)
            return
        if removed:
            log.info("worker %s: removed %d unfinished write(s) from storage", self.worker_id, removed)
        try:
            removed = sweep_orphaned_outputs(self.db, self.storage, self.settings.stale_tmp_s, time.time())
        except Exception:  # storage or store unavailable: the next start tries again
            log.warning("worker %s: sweep of unrecorded outputs failed", self.worker_id, exc_info=True)
        else:
            if removed:
                log.info("worker %s: removed %d output(s) no prediction recorded", self.worker_id, removed)
        try:
            removed = sweep_orphaned_scratch(self.db, self.storage)
        except Exception:  # storage or store unavailable: the next start tries again
            log.warning("worker %s: sweep of ended jobs' scratch failed", self.worker_id, exc_info=True)
            return
        if removed:
            log.info(
                "worker %s: removed %d file(s) of ended jobs' scratch from storage", self.worker_id, removed
            )

    def run_forever(self, *, max_jobs: int | None = None) -> None:
        self.sweep()
        ok = self.load()
        done = 0
        last_touch = 0.0
        failures = 0
        while not self.shutdown.is_set():
            try:
                if time.monotonic() - last_touch > self.settings.worker_touch_s:
                    touch(self.db, self.worker_id, None, gpu_memory())
                    last_touch = time.monotonic()
                row = self.claim() if ok else None
            except Exception:  # the store is locked or unreachable: wait and try again
                failures += 1
                log.warning("worker %s: store unavailable (%d)", self.worker_id, failures, exc_info=True)
                self.shutdown.wait(min(30.0, self.settings.poll_interval_s * 2**failures))
                continue
            failures = 0
            if row is None:
                self.shutdown.wait(self.settings.poll_interval_s)
                continue
            self.run_job(row)
            done += 1
            if max_jobs is not None and done >= max_jobs:
                break
        with contextlib.suppress(Exception):
            report_state(self.db, self.worker_id, WorkerState.STOPPED, model=self.settings.model)

    def claim(self) -> Prediction | None:
        """The next job this worker runs: the oldest it can run, or one using a LoRA it holds
        loaded while the oldest has waited at most `affinity_wait_s` (`jobs.claim_next`)."""
        held: HeldLoras | None = getattr(self.tasks, "held_loras", None)  # tasks.TaskTable's
        return jobs.claim_next(
            self.db,
            self.worker_id,
            self.settings.lease_s,
            tuple(self.tasks),
            prefer=held.identities() if held is not None else frozenset(),
            affinity_wait_s=self.settings.affinity_wait_s,
        )

    def run_job(self, row: Prediction) -> None:
        """Run one claimed job and record its outcome, unless another worker took it over.

        The job directory is shared by every attempt (a training run resumes from it), so only
        the worker whose outcome was recorded removes it. Every log line written meanwhile, in
        this thread or the lease's, carries the prediction's id.
        """
        with prediction_context(row.id):
            self._run_job(row)

    def _run_job(self, row: Prediction) -> None:
        task = self.tasks[row.kind]
        job_dir = self.settings.jobs_dir / row.id
        reporter = ProgressReporter(self.db, row.id, self.worker_id)
        started = time.monotonic()
        with Lease(
            self.db,
            row.id,
            self.worker_id,
            self.settings.lease_s,
            self.shutdown,
            store_retry_s=self.settings.store_retry_s,
        ) as lease:
            ctx = JobContext(
                settings=self.settings,
                storage=self.storage,
                prediction=row,
                lease=lease,
                progress=reporter,
                job_dir=job_dir,
            )
            with contextlib.suppress(*TRANSIENT_STORE_ERRORS):
                touch(self.db, self.worker_id, row.id)
            # the client's log names no host or pid; the worker's own log ties the two together
            log.info("job %s: attempt %d on worker %s", row.id, row.attempts, self.worker_id)
            reporter.log(f"attempt {row.attempts} of {row.max_attempts}")
            try:
                recorded = self._finish(row, ctx, task, started)
            except StoreUnavailable:  # shutting down with the store gone: the lease runs out, it reruns
                log.exception("job %s: could not record its outcome", row.id)
                recorded = False
        self._count(row, ctx, time.monotonic() - started if recorded else None)
        if recorded:
            shutil.rmtree(job_dir, ignore_errors=True)
            self._drop_scratch(row, ctx)
        with contextlib.suppress(Exception):
            touch(self.db, self.worker_id, None)

    def _drop_scratch(self, row: Prediction, ctx: JobContext) -> None:
        """Delete the job's scratch in storage: it has ended, no attempt will need it. Best effort
        (an orphan left by an outage costs space, nothing else)."""
        for key in ctx.scratch_keys:
            try:
                self.storage.delete(key)
            except Exception:
                log.warning("job %s: scratch %s not deleted from storage", row.id, key, exc_info=True)

    def _count(self, row: Prediction, ctx: JobContext, job_s: float | None) -> None:
        """Add this attempt to the store's /metrics counts: its denoising steps, and (when its
        outcome was recorded here) its duration by the status it ended with. Best effort."""
        try:
            increments = metrics.observations(metrics.STEP_DURATION, {"model": row.model}, ctx.step_seconds)
            status = jobs.get_status(self.db, row.id) if job_s is not None else None
            if job_s is not None and status is not None:
                labels = {"model": row.model, "status": status}
                increments += metrics.observations(metrics.JOB_DURATION, labels, [job_s])
            metrics.add(self.db, increments)
        except Exception:
            log.warning("job %s: metrics not recorded", row.id, exc_info=True)

    def _record(self, what: str, write: Callable[[], bool]) -> bool:
        """A terminal write, retried through a locked or unreachable store (until shutdown)."""
        return retry_store(write, what=what, stop=self.shutdown, within_s=None)

    def _finish(self, row: Prediction, ctx: JobContext, task: Task, started: float) -> bool:
        """Run the task; True when this worker's terminal outcome was recorded."""
        try:
            outcome = task(ctx)
        except TaskStopped:
            return self._stopped(row, ctx)
        except TaskError as exc:
            return self._fail(row, ctx, exc.code, exc.message)
        except GIVE_BACK_ERRORS:  # the store's trouble, not the job's: give it back
            log.warning("job %s: store unavailable during the task", row.id, exc_info=True)
            return self._stopped(row, ctx, StopReason.STORE_UNAVAILABLE)
        except OSError as exc:
            if is_storage_error(exc):
                log.warning("job %s: storage error", row.id, exc_info=True)
                return self._storage_trouble(row, ctx, exc)
            return self._crashed(row, ctx, exc)
        except Exception as exc:
            return self._crashed(row, ctx, exc)
        ctx.progress.flush()
        sizes = self._sizes(outcome.outputs)
        won = ctx.lease.reason is not StopReason.LEASE_LOST and self._record(
            f"job {row.id}: completion",
            lambda: jobs.complete(
                self.db,
                row.id,
                self.worker_id,
                outputs=outcome.outputs,
                result={**(row.result or {}), **outcome.result},
                inference_ms=int((time.monotonic() - started) * 1000),
                output_sizes=sizes,
            ),
        )
        if won:
            return True
        # cancelled while it finished (e.g. during encoding), or another worker owns the job now:
        # either way these outputs never count
        for key in outcome.outputs:
            with contextlib.suppress(Exception):
                self.storage.delete(key)
        if ctx.lease.reason is StopReason.LEASE_LOST:
            return False
        return self._record(
            f"job {row.id}: cancellation", lambda: jobs.mark_cancelled(self.db, row.id, self.worker_id)
        )

    def _sizes(self, outputs: list[str]) -> dict[str, int]:
        """Each output's bytes, counted in its key's storage (store/storage_quota.py); one that
        cannot be read now counts 0 rather than hold the outcome back."""
        sizes: dict[str, int] = {}
        for key in outputs:
            try:
                sizes[key] = self.storage.size(key)
            except Exception:
                log.warning("output %s: size not read; it counts 0 bytes", key, exc_info=True)
        return sizes

    def _fail(self, row: Prediction, ctx: JobContext, code: ErrorCode, message: str) -> bool:
        ctx.progress.flush()
        error = scrub_paths(message)
        return self._record(
            f"job {row.id}: failure",
            lambda: jobs.fail(self.db, row.id, self.worker_id, code=code, error=error),
        )

    def _crashed(self, row: Prediction, ctx: JobContext, exc: Exception) -> bool:
        """A bug or an unforeseen error: the traceback goes to the worker's log, a one-line
        summary without server paths to the client."""
        log.exception("job %s failed", row.id)
        summary = f"{type(exc).__name__}: {exc}"
        ctx.progress.log(f"task execution failed: {summary}")
        return self._fail(row, ctx, ErrorCode.TASK_FAILED, f"task execution failed: {summary}")

    def _storage_trouble(self, row: Prediction, ctx: JobContext, exc: OSError) -> bool:
        """Disk full, read-only, not permitted or failing: put the job back to run again later
        (not counting the attempt), and after `storage_retries` such tries fail it with 5003."""
        problem = storage_problem(exc)
        tries = int((row.result or {}).get(jobs.PUT_BACK_COUNT, 0))
        if tries >= self.settings.storage_retries:
            return self._fail(
                row,
                ctx,
                ErrorCode.UNAVAILABLE,
                f"storage unavailable: {problem}; gave up after {tries + 1} tries",
            )
        delay = self.settings.storage_retry_s * 2**tries
        ctx.progress.flush()
        self._record(
            f"job {row.id}: put back",
            lambda: (
                jobs.put_back(
                    self.db,
                    row.id,
                    self.worker_id,
                    delay_s=delay,
                    note=f"storage unavailable: {problem}; trying again in {delay:g}s "
                    f"({tries + 1}/{self.settings.storage_retries}, not counted as an attempt)",
                )
                is not None
            ),
        )
        return False  # the job lives on; its directory stays for the next try

    def _stopped(self, row: Prediction, ctx: JobContext, reason: StopReason | None = None) -> bool:
        """True when the job ended here (cancelled); a released or lost job lives on elsewhere."""
        reason = reason or ctx.lease.reason
        ctx.progress.flush()
        if reason is StopReason.CANCELLED:
            return self._record(
                f"job {row.id}: cancellation", lambda: jobs.mark_cancelled(self.db, row.id, self.worker_id)
            )
        if reason in (StopReason.SHUTDOWN, StopReason.STORE_UNAVAILABLE):
            # released: the attempt is not counted (a cancel asked meanwhile ends it cancelled)
            with contextlib.suppress(StoreUnavailable):
                self._record(f"job {row.id}: release", lambda: jobs.release(self.db, row.id, self.worker_id))
        return False  # LEASE_LOST: the job belongs to another worker; leave it alone
