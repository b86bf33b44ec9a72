"""Several processes starting together each run the migrations: one applies them, the others
wait and find the schema at head (a PostgreSQL advisory lock; a file lock for SQLite)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from wanforge.store.migrate import alembic_config, upgrade
from wanforge.store.tables import Base

PROCESSES = 4


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database, never migrated."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
    else:
        yield request.getfixturevalue("postgres_url")


def _upgrade_after(barrier: multiprocessing.synchronize.Barrier, url: str) -> None:
    barrier.wait()
    upgrade(url)


def test_concurrent_upgrades_apply_the_migrations_once(fresh_url: str) -> None:
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(PROCESSES)
    procs = [ctx.Process(target=_upgrade_after, args=(barrier, fresh_url)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * PROCESSES
    head = ScriptDirectory.from_config(alembic_config(fresh_url)).get_current_head()
    engine = create_engine(fresh_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head]
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    finally:
        engine.dispose()
