from __future__ import annotations

from sqlalchemy import select

from wanforge.store import keys
from wanforge.store.db import Database
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
