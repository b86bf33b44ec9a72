"""The Alembic migrations build exactly the schema the models describe (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timedelta

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from wanforge.store.db import Database
from wanforge.store.migrate import upgrade
from wanforge.store.tables import Base


def test_migrated_schema_matches_the_models(db: Database) -> None:
    upgrade(db.url)  # idempotent: a second upgrade is a no-op
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_upgrade_from_0002_gives_existing_rows_an_owner(db: Database) -> None:
    """Rows made before tenancy belong to the oldest key that is not revoked, which also keeps
    the server-wide webhook secret; their output files are recorded as that key's."""
    from alembic import command
    from sqlalchemy import MetaData, Table, insert, select, text

    from wanforge.store.migrate import alembic_config

    config = alembic_config(db.url)
    command.downgrade(config, "0002")
    t = datetime(2026, 1, 1)
    meta = MetaData()
    keys_t, preds_t, uploads_t, secrets_t = (
        Table(name, meta, autoload_with=db.engine)
        for name in ("api_keys", "predictions", "uploads", "server_secrets")
    )
    with db.engine.begin() as conn:
        for kid, created, revoked in (
            ("revoked", t, t),  # oldest, but revoked: not the owner
            ("first", t + timedelta(days=1), None),
            ("second", t + timedelta(days=2), None),
        ):
            conn.execute(
                insert(keys_t).values(
                    id=kid, name=kid, prefix=kid[:8], key_hash=kid, created_at=created, revoked_at=revoked
                )
            )
        conn.execute(
            insert(preds_t).values(
                id="p1",
                model="m",
                kind="generate",
                status="completed",
                input={},
                server_base="",
                outputs=["outputs/a/v.mp4"],
                error="",
                progress={},
                result={},
                logs=[],
                created_at=t,
                attempts=1,
                max_attempts=3,
                cancel_requested=False,
                api_key_id=None,
            )
        )
        conn.execute(
            insert(uploads_t).values(
                id="u1",
                key="uploads/b/i.png",
                filename="i.png",
                content_type="image/png",
                status="complete",
                created_at=t,
                api_key_id=None,
            )
        )
        conn.execute(insert(secrets_t).values(name="webhook_secret", value="whsec_legacy", created_at=t))
    upgrade(db.url)
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT api_key_id FROM predictions")).all() == [("first",)]
        assert conn.execute(text("SELECT api_key_id FROM uploads")).all() == [("first",)]
        assert conn.execute(text("SELECT key, prediction_id, api_key_id FROM output_files")).all() == [
            ("outputs/a/v.mp4", "p1", "first")
        ]
        assert (
            conn.execute(select(secrets_t.c.value).where(secrets_t.c.name == "webhook_secret:first")).scalar()
            == "whsec_legacy"
        )
        assert conn.execute(text("SELECT count(*) FROM api_keys WHERE is_admin")).scalar() == 0


def test_upgrade_without_keys_leaves_rows_to_admins(db: Database) -> None:
    from alembic import command
    from sqlalchemy import MetaData, Table, insert, text

    from wanforge.store.migrate import alembic_config

    command.downgrade(alembic_config(db.url), "0002")
    preds_t = Table("predictions", MetaData(), autoload_with=db.engine)
    with db.engine.begin() as conn:
        conn.execute(
            insert(preds_t).values(
                id="p1",
                model="m",
                kind="generate",
                status="created",
                input={},
                server_base="",
                outputs=[],
                error="",
                progress={},
                result={},
                logs=[],
                created_at=datetime(2026, 1, 1),
                attempts=0,
                max_attempts=3,
                cancel_requested=False,
                api_key_id=None,
            )
        )
    upgrade(db.url)
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT api_key_id FROM predictions")).all() == [(None,)]
