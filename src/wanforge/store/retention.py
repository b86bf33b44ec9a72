"""Retention in the store: which outputs and uploads are past the window, claimed one at a time.

Every claim is a compare-and-set, so several API processes can sweep at once and each file is
deleted by exactly one of them:
- a prediction is claimed by setting its `expired_at` where it is still NULL; the winner deletes
  its output files. The row stays (with `expired_at`: its record says why the outputs are gone),
  and so do its `output_files` rows, which let `GET /files/{key}` answer 410 instead of 404.
- an upload is claimed by deleting its row; the winner deletes its file.

A prediction's age is counted from when it ended (`completed_at`), so a job that waited long in
the queue still keeps its outputs for the whole window; a job not yet ended is never swept.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, or_, select, update

from wanforge.store.db import Database
from wanforge.store.tables import OutputFile, Prediction, Upload
from wanforge.vocabulary import TERMINAL


def cutoff(now: datetime, window_s: float) -> datetime:
    """What ended or was made before this is past the window."""
    return now - timedelta(seconds=window_s)


def _past_window(before: datetime) -> list[ColumnElement[bool]]:
    return [
        Prediction.expired_at.is_(None),
        Prediction.status.in_(TERMINAL),
        Prediction.completed_at < before,
    ]


def expired_predictions(db: Database, before: datetime, limit: int = 100) -> list[str]:
    """Ids of finished predictions that ended before `before` and whose outputs are still kept."""
    with db.session() as s:
        return list(
            s.scalars(
                select(Prediction.id)
                .where(*_past_window(before))
                .order_by(Prediction.completed_at)
                .limit(limit)
            )
        )


def claim_prediction(db: Database, prediction_id: str, before: datetime, now: datetime) -> list[str] | None:
    """Mark the prediction expired at `now`; the storage keys of its outputs and of the uploads
    made from its inputs (their rows deleted) for the one caller that did, None for every other
    (another sweeper was first, or it no longer qualifies)."""
    with db.session() as s:
        won = s.execute(
            update(Prediction)
            .where(Prediction.id == prediction_id, *_past_window(before))
            .values(expired_at=now)
        ).rowcount  # type: ignore[attr-defined]
        if won != 1:
            return None
        outputs = list(s.scalar(select(Prediction.outputs).where(Prediction.id == prediction_id)) or [])
        inputs = list(s.scalars(select(Upload.key).where(Upload.prediction_id == prediction_id)))
        s.execute(delete(Upload).where(Upload.prediction_id == prediction_id))
        return outputs + inputs


def expired_uploads(db: Database, before: datetime, limit: int = 100) -> list[str]:
    """Ids of uploads (in any state: a ticket never used expires too) made before `before`; not
    those made from a prediction's input, which go with the prediction's files."""
    with db.session() as s:
        return list(
            s.scalars(
                select(Upload.id)
                .where(Upload.created_at < before, Upload.prediction_id.is_(None))
                .order_by(Upload.created_at)
                .limit(limit)
            )
        )


def claim_upload(db: Database, upload_id: str, before: datetime) -> str | None:
    """Delete the upload's row; its storage key for the one caller that did, else None."""
    with db.session() as s:
        key = s.scalar(select(Upload.key).where(Upload.id == upload_id))
        won = s.execute(delete(Upload).where(Upload.id == upload_id, Upload.created_at < before)).rowcount  # type: ignore[attr-defined]
        return key if won == 1 else None


def output_expired_at(db: Database, storage_key: str) -> datetime | None:
    """When the retention sweep removed this output file; None when it did not (or no prediction
    has this output)."""
    with db.session() as s:
        return s.scalar(
            select(Prediction.expired_at)
            .join(OutputFile, OutputFile.prediction_id == Prediction.id)
            .where(OutputFile.key == storage_key, Prediction.expired_at.is_not(None))
        )


def retained(since: datetime) -> ColumnElement[bool]:
    """The condition on predictions that are within the window: not swept, and not ended before
    `since` (one not yet ended always is)."""
    return Prediction.expired_at.is_(None) & or_(
        Prediction.completed_at.is_(None),
        Prediction.completed_at >= since,
        Prediction.status.not_in(TERMINAL),
    )
