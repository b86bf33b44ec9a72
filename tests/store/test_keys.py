from __future__ import annotations

import pytest
from sqlalchemy import select

from wanforge.store import keys
from wanforge.store.db import Database
from wanforge.store.quotas import KeyRevoked, Limits
from wanforge.store.tables import ApiKey


def test_keys_are_hashed_verified_and_revocable(db: Database) -> None:
    plaintext, row = keys.create_key(db, "ci")
    assert plaintext.startswith("wf_") and len(plaintext) > 40
    with db.session() as s:
        stored = s.scalars(select(ApiKey.key_hash)).all()
    assert plaintext not in stored and keys.hash_key(plaintext) in stored
    assert keys.verify_key(db, plaintext) is not None
    assert keys.verify_key(db, plaintext + "x") is None
    assert [r.id for r in keys.revoke_key(db, row.id)] == [row.id]
    assert keys.verify_key(db, plaintext) is None
    assert not keys.has_active_key(db)


def test_ensure_key_is_idempotent(db: Database) -> None:
    a = keys.ensure_key(db, "my-secret-key")
    b = keys.ensure_key(db, "my-secret-key")
    assert a.id == b.id and len(keys.list_keys(db)) == 1
    assert keys.verify_key(db, "my-secret-key") is not None


def test_expired_keys_are_refused_from_their_expiry_on(db: Database) -> None:
    from datetime import datetime, timedelta

    t = datetime(2026, 5, 1, 12, 0)
    plaintext, _row = keys.create_key(db, "temp", keys.KeyOptions(expires_at=t))
    assert keys.verify_key(db, plaintext, now=t - timedelta(microseconds=1)) is not None
    assert keys.verify_key(db, plaintext, now=t) is None


def test_update_changes_only_what_is_given(db: Database) -> None:
    from datetime import datetime

    _plain, row = keys.create_key(db, "k", keys.KeyOptions(rpm=60, concurrency=4))
    assert [r.id for r in keys.update_key(db, row.prefix[:6], concurrency=2)] == [row.id]
    got = keys.get_key(db, row.id)
    assert got is not None and (got.rpm, got.concurrency, got.expires_at) == (60, 2, None)
    keys.update_key(db, row.id, rpm=None, expires_at=datetime(2030, 1, 1))
    got = keys.get_key(db, row.id)
    assert got is not None and (got.rpm, got.concurrency, got.expires_at) == (None, 2, datetime(2030, 1, 1))
    assert keys.update_key(db, "nomatch", rpm=1) == []


def test_revoking_a_key_cancels_its_queued_jobs_and_stops_its_running_one(db: Database) -> None:
    from wanforge.store import jobs

    def submit(key_id: str, webhook: str | None = None) -> str:
        return jobs.create_prediction(
            db,
            model="m",
            kind="generate",
            input={},
            server_base="",
            max_attempts=3,
            api_key_id=key_id,
            webhook_url=webhook,
        ).id

    revoked, kept = keys.create_key(db, "revoked")[1].id, keys.create_key(db, "kept")[1].id
    done, running = submit(revoked), submit(revoked)
    for job in (done, running):
        assert (row := jobs.claim_next(db, "w", 30, ("generate",))) is not None and row.id == job
    assert jobs.complete(db, done, "w", outputs=[], result={}, inference_ms=1)
    queued = [submit(revoked, webhook="https://hooks.example/x") for _ in range(2)]
    others = submit(kept)
    assert [r.id for r in keys.revoke_key(db, revoked)] == [revoked]
    for job in queued:
        row = jobs.get_prediction(db, job)
        assert row is not None and (row.status, row.error) == (
            "cancelled",
            "cancelled: its API key was revoked",
        )
        assert row.webhook_state == "pending"  # the cancel's own delivery, and no other
    assert jobs.is_cancel_requested(db, running)  # stops at its next step, as a cancel does
    assert not jobs.complete(db, running, "w", outputs=["x"], result={}, inference_ms=1)
    assert [jobs.get_status(db, j) for j in (done, others)] == ["completed", "created"]
    assert (row := jobs.claim_next(db, "w", 30, ("generate",))) is not None and row.id == others
    # an API process that still holds the key (WANFORGE_KEY_CACHE_S) cannot queue more for it
    limits = Limits(rpm=0, concurrency=0, max_queued=0, retry_after_s=1)
    with pytest.raises(KeyRevoked):
        jobs.create_prediction(
            db,
            model="m",
            kind="generate",
            input={},
            server_base="",
            max_attempts=3,
            api_key_id=revoked,
            limits=limits,
        )
    assert jobs.list_predictions(db, page=1, page_size=10, visible_to=revoked).total == 4
