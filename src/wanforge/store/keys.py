"""API keys, stored as SHA-256 hashes; the plaintext is shown once, when the key is made."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update

from wanforge.store.db import Database, utcnow
from wanforge.store.tables import ApiKey

KEY_PREFIX = "wf_"
# a key in use is written at most this often (every request checks a key: no write per request)
LAST_USED_EVERY = timedelta(minutes=1)


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def _insert(db: Database, plaintext: str, name: str) -> ApiKey:
    row = ApiKey(
        id=uuid.uuid4().hex,
        name=name,
        prefix=plaintext[:8],
        key_hash=hash_key(plaintext),
        created_at=utcnow(),
    )
    with db.session() as s:
        s.add(row)
    return row


def create_key(db: Database, name: str = "") -> tuple[str, ApiKey]:
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    return plaintext, _insert(db, plaintext, name)


def ensure_key(db: Database, plaintext: str, name: str = "from WANFORGE_API_KEY") -> ApiKey:
    """Accept `plaintext` as a key (idempotent; a revoked key stays revoked)."""
    with db.session() as s:
        existing = s.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(plaintext))).first()
    return existing if existing is not None else _insert(db, plaintext, name)


def verify_key(db: Database, plaintext: str, *, now: datetime | None = None) -> ApiKey | None:
    """The active key for `plaintext`; records its use, at most once per `LAST_USED_EVERY`."""
    now = now or utcnow()
    with db.session() as s:
        row = s.scalars(
            select(ApiKey).where(ApiKey.key_hash == hash_key(plaintext), ApiKey.revoked_at.is_(None))
        ).first()
        if row is not None and (row.last_used_at is None or now - row.last_used_at >= LAST_USED_EVERY):
            s.execute(
                update(ApiKey)
                .where(
                    ApiKey.id == row.id,
                    or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= now - LAST_USED_EVERY),
                )
                .values(last_used_at=now)
            )
    return row


def list_keys(db: Database) -> list[ApiKey]:
    with db.session() as s:
        return list(s.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def has_active_key(db: Database) -> bool:
    with db.session() as s:
        return s.scalars(select(ApiKey.id).where(ApiKey.revoked_at.is_(None))).first() is not None


def revoke_key(db: Database, id_or_prefix: str) -> list[ApiKey]:
    """Revoke the one key given by its id, the key itself, or the start of its 8-character prefix."""
    with db.session() as s:
        rows = [
            row
            for row in s.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None)))
            if row.id == id_or_prefix
            or row.key_hash == hash_key(id_or_prefix)
            or (4 <= len(id_or_prefix) <= len(row.prefix) and row.prefix.startswith(id_or_prefix))
        ]
        if len(rows) == 1:
            rows[0].revoked_at = utcnow()
    return rows
