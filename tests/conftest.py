"""Shared fixtures: settings in a temporary data directory, a migrated store, an API key.

`db` runs every test that uses it on SQLite and, when `WANFORGE_TEST_DATABASE_URL` points at a
PostgreSQL server (`.ci/run` starts one), on a fresh PostgreSQL database too. The migrations run
once per session (per xdist worker) into a template: each test gets a copy of a migrated SQLite
file, or a PostgreSQL database cloned with `CREATE DATABASE ... TEMPLATE` (as procrastinate's
tests do). `postgres_url` stays an empty database, for the tests of the migrations themselves.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from tests.s3 import CREDENTIALS, S3Endpoint, start_moto
from wanforge.config import Settings
from wanforge.store.db import Database
from wanforge.store.keys import create_key
from wanforge.store.migrate import upgrade

POSTGRES_URL = os.environ.get("WANFORGE_TEST_DATABASE_URL")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # key_cache_s=0: a revocation made by a test holds from its next request (tests/api/test_key_cache.py
    # covers the cache)
    return Settings(
        data_dir=tmp_path / "data", allow_private_urls=True, lease_s=3.0, poll_interval_s=0.1, key_cache_s=0.0
    )


SKIP_NO_POSTGRES = "set WANFORGE_TEST_DATABASE_URL to a PostgreSQL server (.ci/run starts one)"


@contextmanager
def _postgres_database(template: str | None = None) -> Iterator[str]:
    """A new database on the test server (a copy of `template` when given), dropped afterwards."""
    assert POSTGRES_URL
    name = f"wanforge_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty database on the test PostgreSQL server, dropped afterwards."""
    if not POSTGRES_URL:
        pytest.skip(SKIP_NO_POSTGRES)
    with _postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """The name of a database migrated to head once per session: `db` clones it per test.
    Nothing connects to it after the migration (PostgreSQL copies only an idle template)."""
    if not POSTGRES_URL:
        pytest.skip(SKIP_NO_POSTGRES)
    with _postgres_database() as url:
        upgrade(url)
        yield str(make_url(url).database)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per session, in one file (no -wal beside it)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "wanforge.db"
    upgrade(f"sqlite:///{path}")
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Database]:
    """A store migrated to head: a copy of the session's migrated SQLite file, or a PostgreSQL
    database cloned from the session's migrated template."""
    if request.param == "sqlite":
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        url = settings.resolved_database_url()
        shutil.copyfile(request.getfixturevalue("sqlite_template"), make_url(url).database or "")
        database = Database(url)
        yield database
        database.dispose()
        return
    with _postgres_database(template=request.getfixturevalue("postgres_template")) as url:
        settings.database_url = url
        database = Database(url)
        yield database
        database.dispose()


@pytest.fixture
def api_key(db: Database) -> str:
    plaintext, _ = create_key(db, "test")
    return plaintext


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    """moto's S3 server, started once per session (tests/s3.py)."""
    yield from start_moto()


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials in the standard AWS variables (boto3 reads them)."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
