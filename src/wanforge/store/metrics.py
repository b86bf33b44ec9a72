"""Cumulative counts kept in the store, so that every API process serves the same /metrics.

What happens in a worker (a job ends, a denoising step ends) or in one API process (a webhook
POST, a retention sweep) is added here with `UPDATE ... SET value = value + x`, in the
transaction that records it where there is one. A histogram is stored as one count per bucket
(not cumulative) plus `_sum` and `_count`; `wanforge.api.metrics` turns it into Prometheus'
cumulative form at scrape time.
"""

from __future__ import annotations

import bisect
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from wanforge.store.db import Database
from wanforge.store.tables import MetricCount

JOB_DURATION = "wanforge_job_duration_seconds"
STEP_DURATION = "wanforge_denoising_step_duration_seconds"
WEBHOOK_DELIVERIES = "wanforge_webhook_deliveries"  # a counter: exposed with `_total`
RETENTION_SWEPT = "wanforge_retention_swept"  # a counter: exposed with `_total`

# upper bounds in seconds; +Inf is implied. A 14B job takes minutes, a tiny demo job a second.
JOB_BUCKETS: tuple[float, ...] = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
STEP_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
HISTOGRAMS: dict[str, tuple[float, ...]] = {JOB_DURATION: JOB_BUCKETS, STEP_DURATION: STEP_BUCKETS}

Labels = Mapping[str, str]


def le(bound: float) -> str:
    """A bucket's upper bound as its `le` label: `0.05`, `1.0`, `+Inf`."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def labels_key(labels: Labels) -> str:
    """One label set as the store keeps it: sorted, compact JSON."""
    return json.dumps(dict(sorted(labels.items())), separators=(",", ":"))


@dataclass(frozen=True)
class Increment:
    name: str
    labels: str  # labels_key(...)
    amount: float


def counter(name: str, labels: Labels, amount: float = 1.0) -> list[Increment]:
    return [Increment(name, labels_key(labels), amount)]


def observations(name: str, labels: Labels, values: Iterable[float]) -> list[Increment]:
    """The increments of observing `values` on histogram `name` (finite, non-negative only)."""
    buckets = HISTOGRAMS[name]
    per_bucket: dict[str, float] = defaultdict(float)
    total, count = 0.0, 0
    for value in values:
        if not math.isfinite(value) or value < 0:
            continue
        at = bisect.bisect_left(buckets, value)
        upper = buckets[at] if at < len(buckets) else math.inf
        per_bucket[le(upper)] += 1
        total += value
        count += 1
    if not count:
        return []
    return [
        *(
            Increment(f"{name}_bucket", labels_key({**labels, "le": bound}), n)
            for bound, n in per_bucket.items()
        ),
        Increment(f"{name}_sum", labels_key(labels), total),
        Increment(f"{name}_count", labels_key(labels), count),
    ]


def add_in(s: Session, increments: Sequence[Increment]) -> None:
    """Add `increments` inside the caller's transaction."""
    for inc in increments:
        where = (MetricCount.name == inc.name, MetricCount.labels == inc.labels)
        done = s.execute(update(MetricCount).where(*where).values(value=MetricCount.value + inc.amount))
        if done.rowcount == 1:  # type: ignore[attr-defined]
            continue
        try:
            with s.begin_nested():  # a savepoint: another process may insert the same row first
                s.add(MetricCount(name=inc.name, labels=inc.labels, value=inc.amount))
        except IntegrityError:
            s.execute(update(MetricCount).where(*where).values(value=MetricCount.value + inc.amount))


def add(db: Database, increments: Sequence[Increment]) -> None:
    if increments:
        with db.session() as s:
            add_in(s, increments)


def read_counts(db: Database) -> list[tuple[str, dict[str, str], float]]:
    """Every stored count: (name, labels, value)."""
    with db.session() as s:
        rows = s.execute(select(MetricCount.name, MetricCount.labels, MetricCount.value)).all()
    return [(name, json.loads(labels), float(value)) for name, labels, value in rows]
