"""/metrics after a few real jobs: parsed with prometheus_client's own parser, exact values."""

from __future__ import annotations

from dataclasses import replace
from functools import cache, partial
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.worker.generate_kit import png_data_uri
from wanforge.api.app import create_app
from wanforge.api.metrics import worker_label
from wanforge.config import Settings
from wanforge.engine.generate import Engine
from wanforge.engine.loading import load_pipeline
from wanforge.store import jobs, metrics
from wanforge.store.db import Database
from wanforge.store.webhooks import record_attempt
from wanforge.store.workers import report_state, touch
from wanforge.vocabulary import ErrorCode, WorkerState
from wanforge.worker.context import JobContext, TaskError, TaskOutcome
from wanforge.worker.generate_task import StepTimer, run_generate
from wanforge.worker.loop import WorkerLoop

MODEL = "alibaba/wan-2.2/i2v-plus-480p"
STEPS = 3  # two timed steps per job: the first is not timed


@cache
def _engine() -> Engine:
    loaded = load_pipeline("demo")
    return Engine(replace(loaded, profile=replace(loaded.profile, steps=STEPS, fps=1)))


def _submit(db: Database, owner: str, model: str = MODEL, **extra: Any) -> str:
    body = {"image": png_data_uri(), "prompt": "a secret prompt about llamas", "seed": 7, **extra}
    return jobs.create_prediction(
        db, model=model, kind="generate", input=body, server_base="http://h", max_attempts=3, api_key_id=owner
    ).id


def _run(loop: WorkerLoop, db: Database) -> None:
    row = jobs.claim_next(db, loop.worker_id, loop.settings.lease_s, ("generate",))
    assert row is not None
    loop.run_job(row)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def scraped(settings: Settings, db: Database, owner: str) -> tuple[str, list[str]]:
    """Two completed generate jobs, one failed job, one queued; two workers; webhook POSTs."""
    settings.content_checker = "none"
    loop = WorkerLoop(settings, db)
    loop.tasks = {"generate": partial(run_generate, engine=_engine(), checker=None)}
    done = [_submit(db, owner), _submit(db, owner)]
    _run(loop, db)
    _run(loop, db)

    def broken(_ctx: JobContext) -> TaskOutcome:
        raise TaskError(ErrorCode.MEDIA_ACCESS_FAILED, "cannot read image: nope")

    failed = _submit(db, owner)
    loop.tasks = {"generate": broken}
    _run(loop, db)
    queued = _submit(db, owner)

    report_state(db, "gpu-host-1-aa", WorkerState.READY, model="demo")
    touch(db, "gpu-host-1-aa", None, {"allocated": 1000, "reserved": 2048, "free": 5000, "total": 8000})
    report_state(db, "gpu-host-2-bb", WorkerState.LOADING, model="demo")
    for ok, permanent in ((True, False), (False, False), (False, True)):
        record_attempt(db, done[0], ok=ok, error="", max_attempts=6, retry_base_s=1, permanent=permanent)

    # no key needed: scrapers send none
    answer = TestClient(create_app(settings, db)).get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=")
    return answer.text, [*done, failed, queued]


def test_metrics_after_a_few_jobs(scraped: tuple[str, list[str]]) -> None:
    text, _ = scraped
    samples = _samples(text)
    # the queue and the jobs by status, from the store
    assert _value(samples, "wanforge_queue_depth", model=MODEL) == 1
    assert _value(samples, "wanforge_queue_depth", model="alibaba/wan-2.2/i2v-plus-720p") == 0
    # the ultra-fast models are not served here (no distill LoRAs): not listed either
    assert "ultra-fast" not in text
    assert _value(samples, "wanforge_jobs", model=MODEL, status="completed") == 2
    assert _value(samples, "wanforge_jobs", model=MODEL, status="failed") == 1
    assert _value(samples, "wanforge_jobs", model=MODEL, status="created") == 1
    # job durations by final status; each attempt's steps but the first
    job = "wanforge_job_duration_seconds"
    assert _value(samples, f"{job}_count", model=MODEL, status="completed") == 2
    assert _value(samples, f"{job}_count", model=MODEL, status="failed") == 1
    assert _value(samples, f"{job}_bucket", model=MODEL, status="completed", le="+Inf") == 2
    step = "wanforge_denoising_step_duration_seconds"
    assert _value(samples, f"{step}_count", model=MODEL) == 2 * (STEPS - 1)
    assert _value(samples, f"{step}_bucket", model=MODEL, le="+Inf") == 2 * (STEPS - 1)
    assert _value(samples, f"{step}_sum", model=MODEL) > 0
    # cumulative buckets never go down
    buckets = [
        value
        for (name, labels), value in samples.items()
        if name == f"{step}_bucket" and ("model", MODEL) in labels
    ]
    assert buckets == sorted(buckets) and len(buckets) == len(metrics.STEP_BUCKETS) + 1
    # workers and what the GPU one reported
    assert _value(samples, "wanforge_workers", state="ready") == 1
    assert _value(samples, "wanforge_workers", state="loading") == 1
    assert _value(samples, "wanforge_workers", state="failed") == 0
    assert _value(samples, "wanforge_workers_busy") == 0
    gpu = worker_label("gpu-host-1-aa")
    assert {
        kind: _value(samples, "wanforge_gpu_memory_bytes", worker=gpu, kind=kind)
        for kind in ("allocated", "reserved", "free", "total")
    } == {"allocated": 1000, "reserved": 2048, "free": 5000, "total": 8000}
    assert not any(
        name == "wanforge_gpu_memory_bytes" and ("worker", worker_label("gpu-host-2-bb")) in labels
        for name, labels in samples
    )
    # webhook POSTs by outcome
    for outcome in ("delivered", "retry", "failed"):
        assert _value(samples, "wanforge_webhook_deliveries_total", outcome=outcome) == 1
    # this API process's own
    assert ("process_cpu_seconds_total", ()) in samples


def test_metrics_carry_no_tenant_data(scraped: tuple[str, list[str]], owner: str) -> None:
    text, ids = scraped
    for secret in (*ids, owner, "llamas", "gpu-host-1", "http://h"):
        assert secret not in text


def test_every_api_process_answers_the_same(settings: Settings, db: Database, owner: str) -> None:
    _submit(db, owner)
    metrics.add(
        db, metrics.observations(metrics.JOB_DURATION, {"model": MODEL, "status": "completed"}, [3.0])
    )

    def store_part(app_text: str) -> dict[Any, float]:
        return {key: v for key, v in _samples(app_text).items() if key[0].startswith("wanforge_")}

    first = TestClient(create_app(settings, db)).get("/metrics").text
    second = TestClient(create_app(settings, db)).get("/metrics").text
    assert store_part(first) == store_part(second)
    assert (
        _value(
            _samples(first), "wanforge_job_duration_seconds_bucket", model=MODEL, status="completed", le="1.0"
        )
        == 0
    )
    assert (
        _value(
            _samples(first), "wanforge_job_duration_seconds_bucket", model=MODEL, status="completed", le="5.0"
        )
        == 1
    )


def test_observations_land_in_their_buckets() -> None:
    labels = {"model": "m"}
    increments = metrics.observations(metrics.STEP_DURATION, labels, [0.05, 0.06, 500.0, float("nan"), -1.0])
    assert {(i.name, i.labels, i.amount) for i in increments} == {
        (f"{metrics.STEP_DURATION}_bucket", '{"le":"0.05","model":"m"}', 1),  # le is inclusive
        (f"{metrics.STEP_DURATION}_bucket", '{"le":"0.1","model":"m"}', 1),
        (f"{metrics.STEP_DURATION}_bucket", '{"le":"+Inf","model":"m"}', 1),
        (f"{metrics.STEP_DURATION}_sum", '{"model":"m"}', 500.11),
        (f"{metrics.STEP_DURATION}_count", '{"model":"m"}', 3),
    }
    assert metrics.observations(metrics.STEP_DURATION, labels, []) == []


def test_the_step_timer_skips_the_first_step() -> None:
    ticks = iter([10.0, 12.5, 13.0, 16.0])
    into: list[float] = []
    timer = StepTimer(into, clock=lambda: next(ticks))
    for _ in range(4):
        timer.step()
    assert into == [2.5, 0.5, 3.0]
