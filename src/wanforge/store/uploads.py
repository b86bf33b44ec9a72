"""Upload records: a ticket (pending, with a PUT token) that becomes complete once bytes arrive.

A PUT claims its ticket (pending -> receiving) in one compare-and-set before it writes a byte, so
of several concurrent PUTs with the same token exactly one is received.
"""

from __future__ import annotations

import hashlib
import uuid
from enum import StrEnum

from sqlalchemy import update

from wanforge.store.db import Database, is_row_id, utcnow
from wanforge.store.tables import Upload


class UploadState(StrEnum):
    PENDING = "pending"  # a ticket waiting for its PUT
    RECEIVING = "receiving"  # one PUT holds it
    COMPLETE = "complete"


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_upload(
    db: Database,
    *,
    key: str,
    filename: str,
    content_type: str,
    declared_size: int | None,
    put_token: str | None,
    api_key_id: str | None,
) -> Upload:
    row = Upload(
        id=uuid.uuid4().hex,
        key=key,
        filename=filename,
        content_type=content_type,
        declared_size=declared_size,
        status=UploadState.PENDING,
        put_token_hash=_token_hash(put_token) if put_token else None,
        created_at=utcnow(),
        api_key_id=api_key_id,
    )
    with db.session() as s:
        s.add(row)
    return row


def get_upload(db: Database, upload_id: str) -> Upload | None:
    if not is_row_id(upload_id):
        return None
    with db.session() as s:
        return s.get(Upload, upload_id)


def token_matches(row: Upload, token: str) -> bool:
    return row.put_token_hash is not None and row.put_token_hash == _token_hash(token)


def claim(db: Database, upload_id: str, token: str) -> bool:
    """Take the ticket for one PUT: True for exactly one caller while it is pending."""
    with db.session() as s:
        result = s.execute(
            update(Upload)
            .where(
                Upload.id == upload_id,
                Upload.status == UploadState.PENDING,
                Upload.put_token_hash == _token_hash(token),
            )
            .values(status=UploadState.RECEIVING)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def release(db: Database, upload_id: str) -> None:
    """Give a claimed ticket back (its PUT failed): the same URL may be PUT again."""
    with db.session() as s:
        s.execute(
            update(Upload)
            .where(Upload.id == upload_id, Upload.status == UploadState.RECEIVING)
            .values(status=UploadState.PENDING)
        )


def mark_complete(db: Database, upload_id: str, size: int) -> None:
    with db.session() as s:
        row = s.get(Upload, upload_id)
        if row is not None:
            row.size = size
            row.status = UploadState.COMPLETE
            row.put_token_hash = None
