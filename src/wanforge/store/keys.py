"""API keys, stored as SHA-256 hashes; the plaintext is shown once, when the key is made."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from wanforge.store.db import Database, utcnow
from wanforge.store.jobs import cancel_all_of_key
from wanforge.store.tables import ApiKey

KEY_PREFIX = "wf_"
# a key in use is written at most this often (every request checks a key: no write per request)
LAST_USED_EVERY = timedelta(minutes=1)


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


@dataclass(frozen=True)
class KeyOptions:
    """What an operator sets on a key. `rpm` / `concurrency` / `max_queued`: None = the server's
    default, 0 = unlimited. `weight`: its share of the workers (store/fairness.py), > 0.
    `expires_at` (naive UTC): None = never."""

    is_admin: bool = False
    rpm: int | None = None
    concurrency: int | None = None
    expires_at: datetime | None = None
    weight: float = 1.0
    max_queued: int | None = None
    storage_quota: int | None = None  # bytes; None = WANFORGE_DEFAULT_STORAGE_QUOTA_BYTES, 0 = unlimited

    def __post_init__(self) -> None:
        check_weight(self.weight)


MAX_WEIGHT = 1000.0


def check_weight(weight: float) -> None:
    """A key's weight: a finite number above 0, at most MAX_WEIGHT (ValueError naming it)."""
    if not 0 < weight <= MAX_WEIGHT:
        raise ValueError(f"weight must be above 0 and at most {MAX_WEIGHT:g}, got {weight:g}")


def _insert(db: Database, plaintext: str, name: str, options: KeyOptions) -> ApiKey:
    row = ApiKey(
        id=uuid.uuid4().hex,
        name=name,
        prefix=plaintext[:8],
        key_hash=hash_key(plaintext),
        created_at=utcnow(),
        is_admin=options.is_admin,
        rpm=options.rpm,
        concurrency=options.concurrency,
        expires_at=options.expires_at,
        rate_count=0,
        weight=options.weight,
        fair_start=0.0,
        fair_finish=0.0,
        max_queued=options.max_queued,
        storage_quota=options.storage_quota,
    )
    with db.session() as s:
        s.add(row)
    return row


def create_key(db: Database, name: str = "", options: KeyOptions | None = None) -> tuple[str, ApiKey]:
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    return plaintext, _insert(db, plaintext, name, options or KeyOptions())


def ensure_key(db: Database, plaintext: str, name: str = "from WANFORGE_API_KEY") -> ApiKey:
    """Accept `plaintext` as a key (idempotent; a revoked key stays revoked)."""
    with db.session() as s:
        existing = s.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(plaintext))).first()
    return existing if existing is not None else _insert(db, plaintext, name, KeyOptions())


def _usable(now: datetime) -> Any:
    return ApiKey.revoked_at.is_(None) & (ApiKey.expires_at.is_(None) | (ApiKey.expires_at > now))


def verify_key(db: Database, plaintext: str, *, now: datetime | None = None) -> ApiKey | None:
    """The active key for `plaintext` (not revoked, not expired), read from the store on every
    call (the API keeps what this answers for at most WANFORGE_KEY_CACHE_S: api/keycache.py). Records the
    key's use, at most once per `LAST_USED_EVERY`."""
    now = now or utcnow()
    with db.session() as s:
        row = s.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(plaintext), _usable(now))).first()
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


def get_key(db: Database, key_id: str) -> ApiKey | None:
    with db.session() as s:
        return s.get(ApiKey, key_id)


def has_active_key(db: Database) -> bool:
    with db.session() as s:
        return s.scalars(select(ApiKey.id).where(_usable(utcnow()))).first() is not None


def _matching(s: Session, id_or_prefix: str) -> list[ApiKey]:
    """Keys not revoked given by their id, the key itself, or the start of its 8-character prefix."""
    return [
        row
        for row in s.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None)))
        if row.id == id_or_prefix
        or row.key_hash == hash_key(id_or_prefix)
        or (4 <= len(id_or_prefix) <= len(row.prefix) and row.prefix.startswith(id_or_prefix))
    ]


def revoke_key(db: Database, id_or_prefix: str) -> list[ApiKey]:
    """Revoke the one key `id_or_prefix` names (see `_matching`); the matches, to report.

    Its work ends with it, in the same transaction: its queued jobs are cancelled and its running
    ones asked to stop (`jobs.cancel_all_of_key`), so none runs or completes for a key nobody
    may use any more; each sends only the webhook of its cancellation."""
    with db.session() as s:
        rows = _matching(s, id_or_prefix)
        if len(rows) == 1:
            rows[0].revoked_at = utcnow()
            cancel_all_of_key(s, rows[0].id)
    return rows


UNCHANGED: Any = object()  # update_key: leave this field as it is


def update_key(
    db: Database,
    id_or_prefix: str,
    *,
    rpm: int | None = UNCHANGED,
    concurrency: int | None = UNCHANGED,
    expires_at: datetime | None = UNCHANGED,
    weight: float = UNCHANGED,
    max_queued: int | None = UNCHANGED,
    storage_quota: int | None = UNCHANGED,
) -> list[ApiKey]:
    """Change the limits, weight or expiry of the one key `id_or_prefix` names; the matches, to
    report. None for a limit means the server's default again, None for `expires_at` never."""
    if weight is not UNCHANGED:
        check_weight(weight)
    with db.session() as s:
        rows = _matching(s, id_or_prefix)
        if len(rows) == 1:
            row = rows[0]
            if rpm is not UNCHANGED:
                row.rpm = rpm
            if concurrency is not UNCHANGED:
                row.concurrency = concurrency
            if expires_at is not UNCHANGED:
                row.expires_at = expires_at
            if weight is not UNCHANGED:
                row.weight = weight
            if max_queued is not UNCHANGED:
                row.max_queued = max_queued
            if storage_quota is not UNCHANGED:
                row.storage_quota = storage_quota
    return rows
