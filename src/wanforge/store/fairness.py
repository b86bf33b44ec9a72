"""Fair scheduling between keys: start-time fair queueing over the keys' queues.

Each key has a weight (`wanforge keys update --weight`, 1 by default) and two tags in its row:
`fair_start`, the turn its last started job was given, and `fair_finish`, the turn its next one
may have (`fair_start + 1 / weight`). The queue's current turn V is the latest turn given
(the largest `fair_start`). A key with runnable jobs competes with the turn
`max(fair_finish, V)`; the next job goes to the key with the earliest turn (a tie to the key
whose oldest runnable job is older), and within a key to its oldest job (FIFO; LoRA affinity
may pick a younger one of that key's jobs: `jobs.claim_next`). Starting it moves the key's
tags on by `1 / weight`.

So two keys of weight 1 alternate, a key of weight 2 gets two turns for each of another's one,
and a key that waited while others ran joins at the current turn V: it saves up no turns to
spend in a burst later, and its next job starts after at most one job of each other key (the
turns already given). Jobs of no key (made before tenancy) compete as a key that never ran.

The positions of queued jobs follow from the same tags with no new arrivals: each key's jobs in
FIFO order at turns `max(fair_finish, V)`, then `1 / weight` apart (`queue_order`); a claim
takes them in exactly that order.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from wanforge.store.db import Database
from wanforge.store.tables import ApiKey, Prediction
from wanforge.vocabulary import Status


@dataclass(frozen=True)
class Tags:
    """A key's scheduling state: `finish` (its next turn, before V) and `weight`."""

    finish: float = 0.0
    weight: float = 1.0


NO_KEY = Tags()  # jobs of no key: a key that never ran


@dataclass(frozen=True)
class Head:
    """A key that has runnable jobs, as a claim sees it: its tags and its oldest runnable job."""

    key_id: str | None
    oldest: datetime
    tags: Tags


def turn(tags: Tags, vtime: float) -> float:
    """The turn of a key's next job: its own finish tag, or the current turn V if that is later."""
    return max(tags.finish, vtime)


def fair_pick(heads: Iterable[Head], vtime: float) -> Head | None:
    """The key whose job starts next: the earliest turn, a tie to the older oldest job."""
    return min(heads, key=lambda h: (turn(h.tags, vtime), h.oldest), default=None)


def heads(s: Session, runnable: Sequence[Any]) -> tuple[list[Head], float]:
    """The keys with runnable jobs (`runnable`: the conditions on a prediction) with their
    tags, and the current turn V: one statement."""
    vtime = select(func.max(ApiKey.fair_start)).scalar_subquery()
    rows = s.execute(
        select(
            Prediction.api_key_id,
            func.min(Prediction.created_at).label("oldest"),
            func.max(ApiKey.fair_finish).label("finish"),  # one key row per group
            func.max(ApiKey.weight).label("weight"),
            vtime.label("vtime"),
        )
        .select_from(Prediction)
        .outerjoin(ApiKey, ApiKey.id == Prediction.api_key_id)
        .where(*runnable)
        .group_by(Prediction.api_key_id)
    ).all()
    # a job whose key row is gone (or that has none) competes as a key that never ran
    found = [
        Head(r.api_key_id, r.oldest, NO_KEY if r.finish is None else Tags(r.finish, r.weight)) for r in rows
    ]
    return found, float(rows[0].vtime or 0.0) if rows else 0.0


def charge(s: Session, key_id: str) -> None:
    """Give `key_id` its turn for the job just started: its start tag becomes its turn
    (`max(fair_finish, V)`, read in the statement), its finish tag that plus 1 / weight."""
    vtime = func.coalesce(select(func.max(ApiKey.fair_start)).scalar_subquery(), 0.0)
    start = case((ApiKey.fair_finish > vtime, ApiKey.fair_finish), else_=vtime)
    s.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id)
        .values(fair_start=start, fair_finish=start + 1.0 / ApiKey.weight)
        .execution_options(synchronize_session=False)
    )


@dataclass(frozen=True)
class Waiting:
    """A queued job, for its position."""

    id: str
    key_id: str | None
    created_at: datetime


def queue_order(waiting: Iterable[Waiting], tags: Mapping[str | None, Tags], vtime: float) -> list[str]:
    """The order in which claims take `waiting` (oldest first within a key) if nothing else
    arrives: each key's jobs at turns from `turn(tags, V)`, `1 / weight` apart, as `charge` adds."""
    per_key: dict[str | None, list[Waiting]] = defaultdict(list)
    for job in waiting:
        per_key[job.key_id].append(job)
    ordered: list[tuple[float, datetime, str]] = []
    for key_id, queue in per_key.items():
        key_tags = tags.get(key_id, NO_KEY) if key_id is not None else NO_KEY
        at = turn(key_tags, vtime)
        for job in sorted(queue, key=lambda j: j.created_at):
            ordered.append((at, job.created_at, job.id))
            if key_id is not None:  # a keyless job is never charged: each competes at V
                at += 1.0 / key_tags.weight
    return [job_id for _, _, job_id in sorted(ordered)]


@dataclass(frozen=True)
class QueueSnapshot:
    """Where each queued job stands: `positions[id]` jobs start before it (0: it is next)."""

    positions: dict[str, int] = field(default_factory=dict)


def queue_snapshot(db: Database) -> QueueSnapshot:
    """The positions of every queued job (`created`, no cancel asked), from two short reads."""
    with db.reading() as conn:
        waiting = [
            Waiting(r.id, r.api_key_id, r.created_at)
            for r in conn.execute(
                select(Prediction.id, Prediction.api_key_id, Prediction.created_at).where(
                    Prediction.status == Status.CREATED, Prediction.cancel_requested.is_(False)
                )
            )
        ]
        keys = conn.execute(select(ApiKey.id, ApiKey.fair_start, ApiKey.fair_finish, ApiKey.weight)).all()
    tags: dict[str | None, Tags] = {k.id: Tags(k.fair_finish, k.weight) for k in keys}
    vtime = max((k.fair_start for k in keys), default=0.0)
    order = queue_order(waiting, tags, vtime)
    return QueueSnapshot({job_id: i for i, job_id in enumerate(order)})


class QueuePositions:
    """Queued jobs' positions as the API shows them (`queue_position`): one `queue_snapshot`
    shared by every request for up to `max_age_s` seconds, so polls of queued predictions cost
    a dictionary look-up, not a query each. A job the snapshot lacks (submitted since) has the
    queue read again, at most every `min_age_s`; None if it still is not there."""

    def __init__(
        self,
        db: Database,
        max_age_s: float = 1.0,
        min_age_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.max_age_s = max_age_s
        self.min_age_s = min_age_s
        self.clock = clock
        self._snapshot = QueueSnapshot()
        self._read_at = -float("inf")
        self._lock = threading.Lock()

    def _cached(self, prediction_id: str) -> tuple[bool, int | None]:
        """(whether the cached snapshot answers, its answer)."""
        age = self.clock() - self._read_at
        found = self._snapshot.positions.get(prediction_id)
        if age <= self.max_age_s and (found is not None or age <= self.min_age_s):
            return True, found
        return False, None

    def position(self, prediction_id: str) -> int | None:
        """Jobs that start before `prediction_id` (0: it is next), None when it is not queued.
        Blocks for a read of the queue when the snapshot is stale: not for an event loop."""
        answered, found = self._cached(prediction_id)
        if answered:
            return found
        with self._lock:  # one read at a time; those waiting then use it
            answered, found = self._cached(prediction_id)
            if answered:
                return found
            self._snapshot = queue_snapshot(self.db)
            self._read_at = self.clock()
            return self._snapshot.positions.get(prediction_id)

    async def get(self, prediction_id: str) -> int | None:
        """`position` for code on an event loop: no thread hop while the snapshot answers."""
        answered, found = self._cached(prediction_id)
        if answered:
            return found
        return await asyncio.to_thread(self.position, prediction_id)
