"""Apply the Alembic migrations shipped inside the package, once, however many processes start.

Several API processes and workers started together all call `upgrade`: each waits for an
exclusive lock first (a PostgreSQL advisory lock; for SQLite, a lock on a file beside the
database), so one applies the migrations and the others then find the schema at head.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# pg_advisory_lock key of the migration lock: any bigint that no other lock of this database uses
ADVISORY_LOCK_KEY = 0x77616E666F726765  # "wanforge"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@contextmanager
def migration_lock(url: str) -> Iterator[None]:
    """Hold the database's migration lock (blocking until it is free)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        # a session lock on a connection of its own: released when it closes, even on a crash
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
                conn.commit()
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
                    conn.commit()
        finally:
            engine.dispose()
    elif parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        # flock, not BEGIN EXCLUSIVE: Alembic runs its own transactions on its own connection.
        # The OS drops the lock when the process dies, so a crash never leaves it held.
        lock_path = Path(f"{parsed.database}.migrate-lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with lock_path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    else:  # an in-memory SQLite database belongs to one process
        yield


def upgrade(url: str) -> None:
    """Bring the database at `url` to the newest schema (idempotent, safe to run concurrently)."""
    with migration_lock(url):
        command.upgrade(alembic_config(url), "head")
