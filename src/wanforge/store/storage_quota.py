"""The bytes a key stores, and its storage quota.

A key's stored bytes are counted from the records, never kept as a running total, so a deletion
is counted by the deletion itself: the sizes of its uploads (a ticket's declared size from the
moment it is made, so a PUT cannot outgrow the room it was given), the stored inputs of its
predictions (`predictions.input_bytes`, with the uploads made from their large `data:` inputs),
and the sizes of their outputs until the retention sweep deletes them. Deleting a prediction
gives back its input, the uploads made from it and its outputs; an upload counts until the
retention sweep removes it.

The quota (`wanforge keys update --storage-quota`, else WANFORGE_DEFAULT_STORAGE_QUOTA_BYTES;
0 = unlimited) is checked before each write: a key at or over it is refused with 429, a write
that would take it over with 413. A submission is checked in the transaction that admits it
(one key's submissions take turns: `quotas.admit`); uploads are checked as they start, so
concurrent uploads of one key can overshoot by what they carry. Outputs are never refused: a job
that ends over the quota completes, and the key's next write is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from wanforge.store.db import Database
from wanforge.store.tables import OutputFile, Prediction, Upload

FREE_SPACE_HINT = "delete predictions to free space"


@dataclass(frozen=True)
class InlineUpload:
    """A large `data:` input the API stored as an upload of the prediction (deleted with it)."""

    key: str
    filename: str
    content_type: str
    size: int


class OverStorage(Exception):
    """A write the key's storage quota refuses: `status` 429 when the key is already at or over
    it, 413 when this write would take it over."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def stored_bytes(s: Session, key_id: str) -> int:
    """What `key_id` stores now, in bytes (see the module's doc): one statement."""
    upload_bytes = (
        select(func.coalesce(func.sum(func.coalesce(Upload.size, Upload.declared_size, 0)), 0))
        .where(Upload.api_key_id == key_id)
        .scalar_subquery()
    )
    input_bytes = (
        select(func.coalesce(func.sum(Prediction.input_bytes), 0))
        .where(Prediction.api_key_id == key_id)
        .scalar_subquery()
    )
    output_bytes = (
        select(func.coalesce(func.sum(OutputFile.size), 0))
        .join(Prediction, Prediction.id == OutputFile.prediction_id)
        .where(OutputFile.api_key_id == key_id, Prediction.expired_at.is_(None))
        .scalar_subquery()
    )
    return int(s.scalar(select(upload_bytes + input_bytes + output_bytes)) or 0)


def check_room(s: Session, key_id: str, *, quota: int, adding: int, what: str) -> int | None:
    """Raise OverStorage unless `key_id` may store `adding` more bytes (`what`, as the message
    names it) under `quota` (0: unlimited); the bytes left after them, None when unlimited."""
    if not quota:
        return None
    used = stored_bytes(s, key_id)
    if used >= quota:
        raise OverStorage(
            429,
            f"storage quota reached: this key stores {used} bytes, its quota is {quota} bytes; {FREE_SPACE_HINT}",
        )
    if used + adding > quota:
        raise OverStorage(
            413,
            f"storage quota exceeded: {what} ({adding} bytes) would bring this key's stored bytes to "
            f"{used + adding}, over its quota of {quota} bytes; {FREE_SPACE_HINT}",
        )
    return quota - used - adding


def room_left(db: Database, key_id: str, quota: int) -> int | None:
    """The bytes `key_id` may still store under `quota` (None: unlimited); OverStorage 429 when
    none. For a write whose size is known only as it streams in (see `over_room`)."""
    with db.session() as s:
        return check_room(s, key_id, quota=quota, adding=0, what="")


def over_room(what: str, room: int, quota: int) -> OverStorage:
    """413 for a streamed write (`what`) that ran past the `room` the key had left."""
    return OverStorage(
        413,
        f"storage quota exceeded: {what} would take this key over its quota of {quota} bytes "
        f"({room} bytes left); {FREE_SPACE_HINT}",
    )
