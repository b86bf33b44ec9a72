"""The worker loop with plain-Python tasks: outcomes, failures, cancellation, lease loss, health."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import datetime

import pytest

from wanforge.config import Settings
from wanforge.store import jobs
from wanforge.store.db import Database
from wanforge.store.tables import OutputFile, Worker
from wanforge.store.workers import host_label, live_workers, mark_process_gone
from wanforge.vocabulary import ErrorCode, WorkerState
from wanforge.worker.context import JobContext, TaskError, TaskOutcome, TaskStopped
from wanforge.worker.loop import WorkerLoop


def _loop(settings: Settings, db: Database, task: object) -> WorkerLoop:
    loop = WorkerLoop(settings, db)
    loop.tasks = {"generate": task}  # type: ignore[dict-item]
    return loop


def _submit(db: Database, owner: str | None = None) -> str:
    return jobs.create_prediction(
        db, model="m", kind="generate", input={}, server_base="http://h", max_attempts=3, api_key_id=owner
    ).id


def _run_one(loop: WorkerLoop, db: Database) -> None:
    row = jobs.claim_next(db, loop.worker_id, loop.settings.lease_s, ("generate",))
    assert row is not None
    loop.run_job(row)


def test_outcome_is_stored(settings: Settings, db: Database) -> None:
    def task(ctx: JobContext) -> TaskOutcome:
        ctx.progress.report("working", 1, 2, force=True)
        key = ctx.storage.new_key("outputs", "x.bin")
        ctx.storage.put_bytes(key, b"data")
        return TaskOutcome(outputs=[key], result={"answer": 42})

    pid = _submit(db)
    loop = _loop(settings, db, task)
    _run_one(loop, db)
    row = jobs.get_prediction(db, pid)
    assert row is not None and row.status == "completed" and row.result == {"answer": 42}
    assert loop.storage.read_bytes(row.outputs[0]) == b"data"
    with db.session() as s:  # its bytes count in its key's storage
        assert s.get(OutputFile, row.outputs[0]).size == 4  # type: ignore[union-attr]
    assert row.inference_ms is not None and row.progress["stage"] == "working"
    # the job log a client reads names neither the host nor the worker process
    assert row.logs == ["attempt 1 of 3"]
    assert host_label() not in " ".join(row.logs) and str(os.getpid()) not in " ".join(row.logs)


def test_task_errors_keep_their_code(settings: Settings, db: Database) -> None:
    def bad_media(ctx: JobContext) -> TaskOutcome:
        raise TaskError(ErrorCode.MEDIA_ACCESS_FAILED, "cannot read image: nope")

    def crash(ctx: JobContext) -> TaskOutcome:
        raise ZeroDivisionError("boom")

    for task, code, text in (
        (bad_media, 1402, "cannot read image"),
        (crash, 1403, "ZeroDivisionError: boom"),
    ):
        pid = _submit(db)
        _run_one(_loop(settings, db, task), db)
        row = jobs.get_prediction(db, pid)
        assert row is not None and row.status == "failed" and row.error_code == code and text in row.error


def test_cancel_between_steps(settings: Settings, db: Database) -> None:
    started = threading.Event()

    def slow(ctx: JobContext) -> TaskOutcome:
        started.set()
        for _ in range(200):
            if ctx.lease.should_stop():
                raise TaskStopped("stopped")
            time.sleep(0.02)
        raise AssertionError("never cancelled")

    pid = _submit(db)
    loop = _loop(settings, db, slow)
    runner = threading.Thread(target=_run_one, args=(loop, db))
    runner.start()
    assert started.wait(5)
    jobs.request_cancel(db, pid)
    runner.join(10)
    assert jobs.get_prediction(db, pid).status == "cancelled"  # type: ignore[union-attr]


def test_lost_lease_drops_the_outputs(settings: Settings, db: Database) -> None:
    settings.lease_s = 0.3
    made: list[str] = []

    def stalls(ctx: JobContext) -> TaskOutcome:
        # another worker takes the job over while this one is stuck
        with db.session() as s:
            from wanforge.store.tables import Prediction

            row = s.get(Prediction, ctx.prediction.id)
            assert row is not None
            row.lease_owner = "someone-else"
        ctx.job_dir.mkdir(parents=True, exist_ok=True)
        (ctx.job_dir / "checkpoint.pt").write_bytes(b"the new owner's")
        key = ctx.storage.new_key("outputs", "late.bin")
        ctx.storage.put_bytes(key, b"late")
        made.append(key)
        time.sleep(0.3)
        return TaskOutcome(outputs=[key], result={})

    pid = _submit(db)
    loop = _loop(settings, db, stalls)
    _run_one(loop, db)
    row = jobs.get_prediction(db, pid)
    assert row is not None and row.status == "processing" and row.outputs == []
    assert not loop.storage.exists(made[0])
    # the job directory belongs to the worker that owns the job now
    assert (settings.jobs_dir / pid / "checkpoint.pt").read_bytes() == b"the new owner's"


def test_shutdown_releases_the_job(settings: Settings, db: Database) -> None:
    def waits(ctx: JobContext) -> TaskOutcome:
        ctx.lease.shutdown.set()
        assert ctx.lease.should_stop()
        raise TaskStopped("shutdown")

    pid = _submit(db)
    _run_one(_loop(settings, db, waits), db)
    row = jobs.get_prediction(db, pid)
    assert row is not None and row.status == "created" and row.attempts == 0


def test_health_rows(settings: Settings, db: Database) -> None:
    loop = _loop(settings, db, None)
    loop.tasks = {}
    from wanforge.store.workers import report_state

    report_state(db, loop.worker_id, WorkerState.READY, model="demo")
    assert [w.id for w in live_workers(db, 30)] == [loop.worker_id]
    mark_process_gone(db, host_label(), os.getpid(), "exited")
    assert live_workers(db, 30) == []


def test_finished_job_cleans_its_directory_and_nan_is_stored_as_null(
    settings: Settings, db: Database
) -> None:
    def task(ctx: JobContext) -> TaskOutcome:
        ctx.job_dir.mkdir(parents=True, exist_ok=True)
        (ctx.job_dir / "scratch").write_bytes(b"x")
        ctx.progress.report("training", 1, 1, force=True, loss=float("nan"))
        return TaskOutcome(outputs=[], result={"final_loss": float("inf"), "ok": 1.5})

    pid = _submit(db)
    _run_one(_loop(settings, db, task), db)
    row = jobs.get_prediction(db, pid)
    assert row is not None and row.status == "completed"
    assert row.result == {"final_loss": None, "ok": 1.5} and row.progress["loss"] is None
    assert not (settings.jobs_dir / pid).exists()


def test_deleting_a_prediction_deletes_its_files(settings: Settings, db: Database, api_key: str) -> None:
    from fastapi.testclient import TestClient

    from wanforge.api.app import create_app

    def task(ctx: JobContext) -> TaskOutcome:
        key = ctx.storage.new_key("outputs", "v.mp4")
        ctx.storage.put_bytes(key, b"video")
        return TaskOutcome(outputs=[key], result={})

    from wanforge.store.keys import verify_key

    pid = _submit(db, owner=verify_key(db, api_key).id)  # type: ignore[union-attr]
    loop = _loop(settings, db, task)
    _run_one(loop, db)
    key = jobs.get_prediction(db, pid).outputs[0]  # type: ignore[union-attr]
    client = TestClient(create_app(settings, db))
    auth = {"Authorization": f"Bearer {api_key}"}
    assert client.get(f"/files/{key}").content == b"video"
    resp = client.post("/api/v3/predictions/delete", headers=auth, json={"ids": [pid]})
    assert resp.json()["data"]["deleted"] == [pid]
    assert client.get(f"/files/{key}").status_code == 404 and not loop.storage.exists(key)


def test_a_loading_worker_keeps_reporting(settings: Settings, db: Database) -> None:
    settings.worker_touch_s = 0.05
    loop = WorkerLoop(settings, db)
    seen: list[object] = []

    def slow_load(_settings: Settings) -> dict[str, object]:
        # a 14B load takes minutes: the worker row must keep moving meanwhile
        first = _heartbeat(db, loop.worker_id)
        deadline = time.monotonic() + 10
        while _heartbeat(db, loop.worker_id) == first and time.monotonic() < deadline:
            time.sleep(0.02)
        seen.append(_heartbeat(db, loop.worker_id) > first)
        return {}

    loop.loader = slow_load  # type: ignore[assignment]
    assert loop.load()
    assert seen == [True]
    with db.session() as s:
        assert s.get(Worker, loop.worker_id).state == "ready"  # type: ignore[union-attr]


def _heartbeat(db: Database, worker_id: str) -> datetime:
    with db.session() as s:
        row = s.get(Worker, worker_id)
        assert row is not None
        return row.heartbeat_at


def test_a_cancel_during_encoding_ends_cancelled_without_outputs(settings: Settings, db: Database) -> None:
    made: list[str] = []

    def task(ctx: JobContext) -> TaskOutcome:
        ctx.progress.report("encoding", 1, 1, force=True)
        key = ctx.storage.new_key("outputs", "v.mp4")
        ctx.storage.put_bytes(key, b"video")
        made.append(key)
        jobs.request_cancel(db, ctx.prediction.id)  # DELETE arrives after the last step: answered 200
        return TaskOutcome(outputs=[key], result={})

    pid = _submit(db)
    loop = _loop(settings, db, task)
    _run_one(loop, db)
    row = jobs.get_prediction(db, pid)
    assert row is not None and (row.status, row.outputs) == ("cancelled", [])
    assert not loop.storage.exists(made[0])


def test_a_worker_claims_only_the_kinds_it_is_set_to(settings: Settings, db: Database) -> None:
    """WANFORGE_WORKER_TASKS=train: a worker kept for training (two GPUs) leaves generation to others."""
    ran: list[str] = []

    def task(kind: str) -> Callable[[JobContext], TaskOutcome]:
        def run(ctx: JobContext) -> TaskOutcome:
            ran.append(kind)
            return TaskOutcome(outputs=[], result={})

        return run

    gen = _submit(db)
    train = jobs.create_prediction(
        db, model="t", kind="train", input={}, server_base="http://h", max_attempts=3, api_key_id=None
    ).id
    only_train = settings.model_copy(update={"worker_tasks": "train"})
    loop = WorkerLoop(
        only_train, db, loader=lambda _s: {"generate": task("generate"), "train": task("train")}
    )
    loop.run_forever(max_jobs=1)
    assert ran == ["train"] and list(loop.tasks) == ["train"]
    assert jobs.get_status(db, train) == "completed" and jobs.get_status(db, gen) == "created"


def test_a_worker_sets_expandable_segments_before_loading_and_keeps_the_operators_own(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    from wanforge.worker import loop as worker_loop
    from wanforge.worker import tasks

    seen: list[str | None] = []
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    monkeypatch.setattr(
        tasks, "build_tasks", lambda _s: seen.append(os.environ.get("PYTORCH_CUDA_ALLOC_CONF"))
    )
    worker_loop._build_tasks(settings)
    assert seen == ["expandable_segments:True"]  # in place when the model loads

    own = {"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:512"}
    worker_loop.prefer_expandable_segments(own)
    assert own == {"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:512"}
