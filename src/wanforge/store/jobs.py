"""Predictions as jobs: create, claim with a lease, heartbeat, progress, finish, cancel.

Every state change by a worker is a compare-and-set on (id, lease_owner), so a worker that lost
its lease (it was too slow, or presumed dead) can never overwrite the outcome of the worker that
took the job over: a job gets exactly one set of outputs.

Lease times are the database's clock (`wanforge.store.clock`), never a host's: hosts whose clocks
disagree by minutes still agree on when a lease runs out. The `now` arguments below stand in for
the database's clock in tests.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, or_, select, true, update
from sqlalchemy.orm import Session

from wanforge.store import fairness
from wanforge.store.affinity import AFFINITY_WINDOW, Queued, input_lora_ids, preferred
from wanforge.store.clock import at
from wanforge.store.db import Database, is_row_id, utcnow
from wanforge.store.quotas import Limits, admit
from wanforge.store.retention import retained
from wanforge.store.storage_quota import InlineUpload, check_room
from wanforge.store.tables import OutputFile, Prediction, Upload
from wanforge.store.uploads import UploadState
from wanforge.vocabulary import TERMINAL, ErrorCode, Status, WebhookState

CANCELLED_MESSAGE = "cancelled by request"


def json_safe(value: Any) -> Any:
    """JSON columns refuse NaN/Infinity on PostgreSQL (and JSON responses refuse them): use null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def new_id() -> str:
    return uuid.uuid4().hex


def ended(status: Status, now: datetime | None = None, **values: Any) -> dict[str, Any]:
    """The column values of a job reaching terminal `status`: the one shape of every ending."""
    assert status.terminal, status
    return {
        "status": status,
        "completed_at": now or utcnow(),
        "lease_owner": None,
        "lease_expires_at": None,
        **values,
    }


def create_prediction(
    db: Database,
    *,
    model: str,
    kind: str,
    input: dict[str, Any],
    server_base: str,
    max_attempts: int,
    api_key_id: str | None = None,
    webhook_url: str | None = None,
    limits: Limits | None = None,
    now: datetime | None = None,
    inline_uploads: Sequence[InlineUpload] = (),
    storage_quota: int = 0,
) -> Prediction:
    """Queue a new prediction. With `limits` (and a key) it is first admitted under them, in the
    same transaction: OverLimit when it may not be (see `wanforge.store.quotas`); then its input
    and `inline_uploads` (its large `data:` inputs, already in storage: recorded as uploads of
    the prediction) must fit the key's `storage_quota`: OverStorage when they do not."""
    now = now or utcnow()
    input_bytes = len(json.dumps(input))
    row = Prediction(
        id=new_id(),
        model=model,
        kind=kind,
        status=Status.CREATED,
        input=input,
        server_base=server_base,
        outputs=[],
        error="",
        progress={},
        result={},
        logs=[],
        created_at=now,
        attempts=0,
        max_attempts=max_attempts,
        cancel_requested=False,
        api_key_id=api_key_id,
        webhook_url=webhook_url,
        webhook_state=WebhookState.PENDING if webhook_url else WebhookState.NONE,
        webhook_attempts=0,
        webhook_error="",
        lora_ids=input_lora_ids(input) or None,
        input_bytes=input_bytes,
    )
    with db.session() as s:
        if limits is not None and api_key_id is not None:
            admit(s, api_key_id, limits, now)
        if storage_quota and api_key_id is not None:
            adding = input_bytes + sum(u.size for u in inline_uploads)
            check_room(s, api_key_id, quota=storage_quota, adding=adding, what="this prediction's input")
        s.add(row)
        for inline in inline_uploads:
            s.add(
                Upload(
                    id=new_id(),
                    key=inline.key,
                    filename=inline.filename,
                    content_type=inline.content_type,
                    declared_size=inline.size,
                    size=inline.size,
                    status=UploadState.COMPLETE,
                    created_at=now,
                    api_key_id=api_key_id,
                    prediction_id=row.id,
                )
            )
    return row


ANYONE: str | None = None  # `visible_to` of an admin key, or of the server itself: every row


def _visible(visible_to: str | None) -> Any:
    """Rows the key `visible_to` may see: its own; every row for ANYONE."""
    return true() if visible_to is ANYONE else Prediction.api_key_id == visible_to


def get_prediction(db: Database, prediction_id: str, visible_to: str | None = ANYONE) -> Prediction | None:
    """The prediction, or None when there is none or it is not `visible_to`'s (the same answer)."""
    if not is_row_id(prediction_id):
        return None
    with db.session() as s:
        return s.scalars(
            select(Prediction).where(Prediction.id == prediction_id, _visible(visible_to))
        ).first()


def get_status(db: Database, prediction_id: str) -> str | None:
    """The status column alone: cheap to poll (the row's input may hold a data: image)."""
    if not is_row_id(prediction_id):
        return None
    with db.session() as s:
        return s.scalar(select(Prediction.status).where(Prediction.id == prediction_id))


def _claimable(now: ColumnElement[datetime]) -> Any:
    return or_(
        Prediction.status == Status.CREATED,
        (Prediction.status == Status.PROCESSING) & (Prediction.lease_expires_at < now),
    )


def _settle_abandoned(db: Database, now: datetime | None) -> None:
    """Jobs whose worker vanished: cancelled ones end as cancelled; ones out of attempts fail (5000)."""
    clock = at(now)
    with db.session() as s:
        s.execute(
            update(Prediction)
            .where(
                Prediction.status == Status.PROCESSING,
                Prediction.lease_expires_at < clock,
                Prediction.cancel_requested.is_(True),
            )
            .values({**ended(Status.CANCELLED, error=CANCELLED_MESSAGE), "completed_at": clock})
        )
        s.execute(
            update(Prediction)
            .where(
                Prediction.status == Status.PROCESSING,
                Prediction.lease_expires_at < clock,
                Prediction.attempts >= Prediction.max_attempts,
            )
            .values(
                {
                    **ended(
                        Status.FAILED,
                        error_code=ErrorCode.INTERNAL,
                        error="the worker running this task stopped responding on each of its attempts; "
                        "giving up",
                    ),
                    "completed_at": clock,
                }
            )
        )


def _claim_values(worker_id: str, lease_s: float, now: datetime | None) -> dict[str, Any]:
    return {
        "status": Status.PROCESSING,
        "lease_owner": worker_id,
        "lease_expires_at": at(now, lease_s),
        "attempts": Prediction.attempts + 1,
        "started_at": func.coalesce(Prediction.started_at, at(now)),
    }


def claim_next(
    db: Database,
    worker_id: str,
    lease_s: float,
    kinds: tuple[str, ...],
    now: datetime | None = None,
    *,
    prefer: frozenset[str] = frozenset(),
    affinity_wait_s: float = 0.0,
) -> Prediction | None:
    """Take the next runnable job (new, or whose worker lost its lease) for `lease_s` seconds
    of the database's clock (`now`: a test's stand-in for it, so expiry is tested without sleeping).

    Fair between keys (`wanforge.store.fairness`): the job goes to the key with the earliest
    turn, and of that key's jobs the oldest runs first. LoRA affinity (`wanforge.store.affinity`)
    within the fair choice: with `prefer` (the identities of the LoRAs this worker holds loaded)
    and `affinity_wait_s` > 0, the oldest of that key's `AFFINITY_WINDOW` oldest runnable jobs
    that names one of them is taken instead, unless the key's oldest runnable job has waited
    longer than `affinity_wait_s` by the database's clock: then its oldest, so no job waits much
    past that for a worker to prefer it.

    One read of the keys with runnable jobs and their turns (and, for affinity, one of the key's
    window), then the chosen row is taken and its key charged its turn in one transaction:
    PostgreSQL locks that row alone with `FOR UPDATE SKIP LOCKED`, passing over a row another
    worker is taking instead of queueing behind it; SQLite (one writer at a time) takes it with
    a compare-and-set. A row another worker won is left out and the choice made again."""
    if affinity_wait_s < 0:
        raise ValueError(f"affinity_wait_s must be >= 0, got {affinity_wait_s}")
    _settle_abandoned(db, now)
    runnable = (
        _claimable(at(now)),
        Prediction.kind.in_(kinds),
        Prediction.cancel_requested.is_(False),
    )
    taken_by_others: list[str] = []
    for _ in range(CLAIM_TRIES):
        candidates = (*runnable, Prediction.id.notin_(taken_by_others)) if taken_by_others else runnable
        with db.session() as s:
            found, vtime = fairness.heads(s, candidates)
        head = fairness.fair_pick(found, vtime)
        if head is None:
            return None
        of_key = (*candidates, _of_key(head.key_id))
        chosen = None
        if prefer and affinity_wait_s > 0:
            chosen = _preferred_job(db, of_key, prefer, affinity_wait_s, now)
        if chosen is None:
            with db.session() as s:
                chosen = s.scalar(
                    select(Prediction.id).where(*of_key).order_by(Prediction.created_at).limit(1)
                )
            if chosen is None:  # its jobs were taken meanwhile
                continue
        if (row := _take(db, chosen, runnable, worker_id, lease_s, now, head.key_id)) is not None:
            return row
        taken_by_others.append(chosen)
    return None


CLAIM_TRIES = 8  # choices made again after losing the chosen row to another worker


def _of_key(key_id: str | None) -> Any:
    return Prediction.api_key_id.is_(None) if key_id is None else Prediction.api_key_id == key_id


def _preferred_job(
    db: Database,
    runnable: tuple[Any, ...],
    prefer: frozenset[str],
    affinity_wait_s: float,
    now: datetime | None,
) -> str | None:
    """The job LoRA affinity takes out of turn, if any (see `affinity.preferred`); reads the
    window's ids, ages and LoRA identities, and the database's clock, without locking anything."""
    with db.session() as s:
        rows = s.execute(
            select(Prediction.id, Prediction.created_at, Prediction.lora_ids, at(now).label("clock"))
            .where(*runnable)
            .order_by(Prediction.created_at)
            .limit(AFFINITY_WINDOW)
        ).all()
    if not rows:
        return None
    queued = [Queued(r.id, r.created_at, r.lora_ids) for r in rows]
    return preferred(queued, prefer, affinity_wait_s, rows[0].clock)


def _take(
    db: Database,
    prediction_id: str,
    runnable: tuple[Any, ...],
    worker_id: str,
    lease_s: float,
    now: datetime | None,
    key_id: str | None,
) -> Prediction | None:
    """Claim the job `prediction_id` if it is still runnable, charging `key_id` its turn in the
    same transaction; None when another worker has it.

    PostgreSQL: one statement that locks that row alone, skipping it when another worker holds
    it. SQLite: a compare-and-set."""
    if db.engine.dialect.name == "postgresql":
        locked = (
            select(Prediction.id)
            .where(Prediction.id == prediction_id, *runnable)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        with db.session() as s:
            row = s.scalars(
                update(Prediction)
                .where(Prediction.id == locked)
                .values(_claim_values(worker_id, lease_s, now))
                .returning(Prediction)
                .execution_options(synchronize_session=False)
            ).first()
            if row is not None and key_id is not None:
                fairness.charge(s, key_id)
            return row
    with db.session() as s:
        claimed = s.execute(
            update(Prediction)
            .where(Prediction.id == prediction_id, *runnable)
            .values(_claim_values(worker_id, lease_s, now))
        ).rowcount  # type: ignore[attr-defined]
        if claimed == 1 and key_id is not None:
            fairness.charge(s, key_id)
    return get_prediction(db, prediction_id) if claimed == 1 else None


def _owned(prediction_id: str, worker_id: str) -> Any:
    return (
        (Prediction.id == prediction_id)
        & (Prediction.lease_owner == worker_id)
        & (Prediction.status == Status.PROCESSING)
    )


def _update_owned(db: Database, prediction_id: str, worker_id: str, **values: Any) -> bool:
    with db.session() as s:
        result = s.execute(update(Prediction).where(_owned(prediction_id, worker_id)).values(**values))
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def heartbeat(
    db: Database, prediction_id: str, worker_id: str, lease_s: float, now: datetime | None = None
) -> bool:
    """Extend the lease to `lease_s` seconds from now by the database's clock (`now`: a test's
    stand-in for it); False when this worker no longer owns the job."""
    return _update_owned(db, prediction_id, worker_id, lease_expires_at=at(now, lease_s))


def set_progress(db: Database, prediction_id: str, worker_id: str, progress: dict[str, Any]) -> bool:
    return _update_owned(db, prediction_id, worker_id, progress=json_safe(progress))


def append_logs(db: Database, prediction_id: str, worker_id: str, lines: list[str]) -> bool:
    row = get_prediction(db, prediction_id)
    if row is None:
        return False
    return _update_owned(db, prediction_id, worker_id, logs=[*row.logs, *lines][-500:])


def complete(
    db: Database,
    prediction_id: str,
    worker_id: str,
    *,
    outputs: list[str],
    result: dict[str, Any],
    inference_ms: int,
    output_sizes: Mapping[str, int] | None = None,
) -> bool:
    """Record the outputs (`output_sizes`: their bytes, counted in the key's storage); False when the job is not this worker's any more or its cancellation
    was asked for meanwhile (then the caller marks it cancelled and drops the outputs), so a
    cancel answered 200 never ends with outputs."""
    with db.session() as s:
        done = s.execute(
            update(Prediction)
            .where(_owned(prediction_id, worker_id), Prediction.cancel_requested.is_(False))
            .values(
                ended(Status.COMPLETED, outputs=outputs, result=json_safe(result), inference_ms=inference_ms)
            )
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            return False
        # the outputs are the prediction's key's: usable as its inputs, and no other key's
        owner = s.scalar(select(Prediction.api_key_id).where(Prediction.id == prediction_id))
        now = utcnow()
        for key in dict.fromkeys(outputs):
            size = (output_sizes or {}).get(key, 0)
            s.merge(
                OutputFile(key=key, prediction_id=prediction_id, api_key_id=owner, created_at=now, size=size)
            )
        return True


def fail(
    db: Database,
    prediction_id: str,
    worker_id: str,
    *,
    code: ErrorCode,
    error: str,
    result: dict[str, Any] | None = None,
) -> bool:
    values = ended(Status.FAILED, error_code=code, error=error)
    if result is not None:
        values["result"] = json_safe(result)
    return _update_owned(db, prediction_id, worker_id, **values)


def mark_cancelled(db: Database, prediction_id: str, worker_id: str) -> bool:
    return _update_owned(db, prediction_id, worker_id, **ended(Status.CANCELLED, error=CANCELLED_MESSAGE))


def request_cancel(db: Database, prediction_id: str, visible_to: str | None = ANYONE) -> Prediction | None:
    """Cancel a job: at once if no worker holds it (queued, or put back to wait), else flag it
    for the worker to stop. None (and nothing done) when there is no such job `visible_to` sees."""
    if get_prediction(db, prediction_id, visible_to) is None:
        return None
    with db.session() as s:
        s.execute(
            update(Prediction)
            .where(
                Prediction.id == prediction_id,
                (Prediction.status == Status.CREATED)
                | ((Prediction.status == Status.PROCESSING) & Prediction.lease_owner.is_(None)),
            )
            .values(ended(Status.CANCELLED, error=CANCELLED_MESSAGE))
        )
        s.execute(
            update(Prediction)
            .where(Prediction.id == prediction_id, Prediction.status == Status.PROCESSING)
            .values(cancel_requested=True)
        )
    return get_prediction(db, prediction_id)


REVOKED_MESSAGE = "cancelled: its API key was revoked"


def cancel_all_of_key(s: Session, key_id: str, error: str = REVOKED_MESSAGE) -> None:
    """In `s`: end every job of `key_id` that no worker holds as cancelled with `error`, and ask
    its running ones to stop (they end `cancelled` at their next step, as on a cancel request)."""
    s.execute(
        update(Prediction)
        .where(
            Prediction.api_key_id == key_id,
            (Prediction.status == Status.CREATED)
            | ((Prediction.status == Status.PROCESSING) & Prediction.lease_owner.is_(None)),
        )
        .values(ended(Status.CANCELLED, error=error))
    )
    s.execute(
        update(Prediction)
        .where(Prediction.api_key_id == key_id, Prediction.status == Status.PROCESSING)
        .values(cancel_requested=True)
    )


def is_cancel_requested(db: Database, prediction_id: str) -> bool:
    with db.session() as s:
        return bool(s.scalar(select(Prediction.cancel_requested).where(Prediction.id == prediction_id)))


@dataclass(frozen=True)
class PredictionPage:
    items: list[Prediction]
    total: int


def list_predictions(
    db: Database,
    *,
    page: int,
    page_size: int,
    model: str | None = None,
    status: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    visible_to: str | None = ANYONE,
    retained_since: datetime | None = None,
) -> PredictionPage:
    """A page of the predictions `visible_to` sees, newest first; with `retained_since`, only
    those within the retention window (see `wanforge.store.retention.retained`)."""
    conditions: list[Any] = [_visible(visible_to)]
    if retained_since is not None:
        conditions.append(retained(retained_since))
    if model:
        conditions.append(Prediction.model == model)
    if status:
        conditions.append(Prediction.status == status)
    if created_after:
        conditions.append(Prediction.created_at >= created_after)
    if created_before:
        conditions.append(Prediction.created_at <= created_before)
    with db.session() as s:
        total = s.scalar(select(func.count()).select_from(Prediction).where(*conditions)) or 0
        items = list(
            s.scalars(
                select(Prediction)
                .where(*conditions)
                .order_by(Prediction.created_at.desc())
                .offset((page - 1) * page_size)
                .limit(page_size)
            )
        )
    return PredictionPage(items=items, total=total)


def delete_predictions(db: Database, ids: list[str], visible_to: str | None = ANYONE) -> dict[str, list[str]]:
    """Delete finished predictions `visible_to` sees: {id: the storage keys of its outputs and of
    the uploads made from its inputs} of those deleted, for the caller to delete the files.

    Running ones are left alone (the caller cancels them)."""
    deleted: dict[str, list[str]] = {}
    ids = [i for i in ids if is_row_id(i)]
    with db.session() as s:
        for row in s.scalars(select(Prediction).where(Prediction.id.in_(ids), _visible(visible_to))):
            if row.status in TERMINAL:
                deleted[row.id] = list(row.outputs or [])
                s.delete(row)
        if deleted:
            s.execute(delete(OutputFile).where(OutputFile.prediction_id.in_(list(deleted))))
            made = s.execute(
                select(Upload.prediction_id, Upload.key).where(Upload.prediction_id.in_(list(deleted)))
            )
            for made_for, key in made.all():
                if made_for is not None:
                    deleted[made_for].append(key)
            s.execute(delete(Upload).where(Upload.prediction_id.in_(list(deleted))))
    return deleted


def release(db: Database, prediction_id: str, worker_id: str) -> bool:
    """Give a job back to the queue (worker shutting down): this attempt does not count.

    A job whose cancellation was asked for meanwhile ends as cancelled instead."""
    if is_cancel_requested(db, prediction_id):
        return mark_cancelled(db, prediction_id, worker_id)
    return _update_owned(
        db,
        prediction_id,
        worker_id,
        status=Status.CREATED,
        lease_owner=None,
        lease_expires_at=None,
        attempts=Prediction.attempts - 1,
    )


PUT_BACK_COUNT = "storage_retries"  # result key: how often a job was put back after a storage error


def put_back(
    db: Database,
    prediction_id: str,
    worker_id: str,
    *,
    delay_s: float,
    note: str,
    now: datetime | None = None,
) -> int | None:
    """Give a job back after a transient problem, to run again in `delay_s` seconds.

    The attempt is not counted: the job stays `processing` with no owner and a lease that runs
    out in `delay_s` (so `claim_next` takes it then, counting the attempt again), and `note` goes
    to its log. Returns how often the job has been put back, None when this worker does not own it.
    """
    row = get_prediction(db, prediction_id)
    if row is None:
        return None
    count = int((row.result or {}).get(PUT_BACK_COUNT, 0)) + 1
    put = _update_owned(
        db,
        prediction_id,
        worker_id,
        lease_owner=None,
        lease_expires_at=at(now, delay_s),
        attempts=Prediction.attempts - 1,
        result=json_safe({**(row.result or {}), PUT_BACK_COUNT: count}),
        logs=[*row.logs, note][-500:],
    )
    return count if put else None


def save_result(db: Database, prediction_id: str, worker_id: str, result: dict[str, Any]) -> bool:
    """Record facts fixed early in a run (e.g. the seed) so a re-run after a crash reuses them."""
    return _update_owned(db, prediction_id, worker_id, result=json_safe(result))
