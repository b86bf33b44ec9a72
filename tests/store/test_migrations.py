"""The Alembic migrations build exactly the schema the models describe (SQLite and PostgreSQL)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from wanforge.store.db import Database
from wanforge.store.migrate import upgrade
from wanforge.store.tables import Base


def test_migrated_schema_matches_the_models(db: Database) -> None:
    upgrade(db.url)  # idempotent: a second upgrade is a no-op
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
