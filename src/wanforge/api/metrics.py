"""What /metrics reports, read from the store at scrape time (a custom Prometheus collector).

Everything comes from the store, so every API process answers a scrape with the same numbers:
gauges are counted from the tables (queue, jobs by status, workers, GPU memory that workers
reported), counters and histograms from the counts workers and senders add
(`wanforge.store.metrics`). Only counts: no prediction id, prompt, key or host name.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from wanforge.catalog import served_models
from wanforge.config import Settings
from wanforge.store import metrics
from wanforge.store.db import Database
from wanforge.store.tables import Prediction
from wanforge.store.workers import live_workers
from wanforge.vocabulary import Status, WebhookState, WorkerState

GPU_MEMORY_KINDS = ("allocated", "reserved", "free", "total")


def worker_label(worker_id: str) -> str:
    """A worker as /metrics names it: a hash of its id, which names its host and pid (those are
    for keyed /health callers only). `sha256(id)[:12]`."""
    return hashlib.sha256(worker_id.encode()).hexdigest()[:12]


class StoreCollector(Collector):
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        yield from self._jobs()
        yield from self._workers()
        yield from self._counts()

    def _jobs(self) -> Iterator[Metric]:
        with self.db.session() as s:
            by_status = s.execute(
                select(Prediction.model, Prediction.status, func.count()).group_by(
                    Prediction.model, Prediction.status
                )
            ).all()
            # waiting to run: new, or put back after a transient problem (no worker holds it)
            waiting = s.execute(
                select(Prediction.model, func.count())
                .where(
                    (Prediction.status == Status.CREATED)
                    | ((Prediction.status == Status.PROCESSING) & Prediction.lease_owner.is_(None))
                )
                .group_by(Prediction.model)
            ).all()
            webhooks = s.execute(
                select(Prediction.webhook_state, func.count())
                .where(Prediction.webhook_state != WebhookState.NONE)
                .group_by(Prediction.webhook_state)
            ).all()
        queue = GaugeMetricFamily(
            "wanforge_queue_depth", "Predictions waiting for a worker, by model", labels=["model"]
        )
        # every model this server offers (the ultra-fast ones only when configured), at 0 when idle
        depth = {model: 0 for model in served_models(self.settings)} | {model: int(n) for model, n in waiting}
        for model, n in sorted(depth.items()):
            queue.add_metric([model], n)
        yield queue
        jobs = GaugeMetricFamily(
            "wanforge_jobs", "Predictions in the store, by model and status", labels=["model", "status"]
        )
        for model, status, n in sorted(by_status):
            jobs.add_metric([model, status], int(n))
        yield jobs
        pending = GaugeMetricFamily(
            "wanforge_webhooks", "Predictions with a webhook, by delivery state", labels=["state"]
        )
        states = {state.value: 0 for state in WebhookState if state is not WebhookState.NONE}
        for state, n in webhooks:
            states[state] = int(n)
        for state, n in sorted(states.items()):
            pending.add_metric([state], n)
        yield pending

    def _workers(self) -> Iterator[Metric]:
        live = live_workers(self.db, self.settings.worker_stale_s)
        workers = GaugeMetricFamily("wanforge_workers", "Live worker processes, by state", labels=["state"])
        counts = {state.value: 0 for state in WorkerState if state is not WorkerState.STOPPED}
        for worker in live:
            counts[worker.state] = counts.get(worker.state, 0) + 1
        for state, n in sorted(counts.items()):
            workers.add_metric([state], n)
        yield workers
        yield GaugeMetricFamily(
            "wanforge_workers_busy",
            "Live workers running a job",
            value=sum(1 for w in live if w.current_job),
        )
        memory = GaugeMetricFamily(
            "wanforge_gpu_memory_bytes",
            "GPU memory of each live worker that uses one: allocated and reserved by its process, "
            "free and total on its device",
            labels=["worker", "kind"],
        )
        for worker in live:
            reported: dict[str, Any] = worker.gpu_memory or {}
            for kind in GPU_MEMORY_KINDS:
                if isinstance(value := reported.get(kind), int):
                    memory.add_metric([worker_label(worker.id), kind], value)
        yield memory

    def _counts(self) -> Iterator[Metric]:
        rows = metrics.read_counts(self.db)
        yield from self._histogram(
            rows,
            metrics.JOB_DURATION,
            "Seconds a job's attempt took, by model and final status",
            ["model", "status"],
        )
        yield from self._histogram(
            rows, metrics.STEP_DURATION, "Seconds one denoising step took, by model", ["model"]
        )
        yield self._counter(
            rows, metrics.WEBHOOK_DELIVERIES, "Webhook POSTs by outcome (delivered, retry, failed)", "outcome"
        )
        yield self._counter(
            rows,
            metrics.RETENTION_SWEPT,
            "What the retention sweep deleted (predictions' outputs, files, uploads)",
            "what",
        )

    @staticmethod
    def _counter(rows: list[tuple[str, dict[str, str], float]], name: str, doc: str, label: str) -> Metric:
        family = CounterMetricFamily(name, doc, labels=[label])
        for row_name, labels, value in sorted(rows, key=lambda r: sorted(r[1].items())):
            if row_name == name:
                family.add_metric([labels.get(label, "")], value)
        return family

    @staticmethod
    def _histogram(
        rows: list[tuple[str, dict[str, str], float]], name: str, doc: str, label_names: list[str]
    ) -> Iterator[Metric]:
        bounds = [*(metrics.le(b) for b in metrics.HISTOGRAMS[name]), "+Inf"]
        buckets: dict[tuple[str, ...], dict[str, float]] = defaultdict(dict)
        sums: dict[tuple[str, ...], float] = {}
        for row_name, labels, value in rows:
            key = tuple(labels.get(n, "") for n in label_names)
            if row_name == f"{name}_bucket":
                buckets[key][labels.get("le", "")] = value
            elif row_name == f"{name}_sum":
                sums[key] = value
        family = HistogramMetricFamily(name, doc, labels=label_names)
        for key in sorted(set(buckets) | set(sums)):
            cumulative, running = [], 0.0
            for bound in bounds:
                running += buckets[key].get(bound, 0.0)
                cumulative.append((bound, running))
            family.add_metric(list(key), cumulative, sum_value=sums.get(key, 0.0))
        yield family
