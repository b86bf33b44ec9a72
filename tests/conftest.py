"""Shared fixtures: settings in a temporary data directory, a migrated store, an API key.

`db` runs every test that uses it on SQLite and, when `WANFORGE_TEST_DATABASE_URL` points at a
PostgreSQL server (`.ci/run` starts one), on a fresh PostgreSQL database too.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
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


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, migrated database on the test PostgreSQL server, dropped afterwards."""
    if not POSTGRES_URL:
        pytest.skip("set WANFORGE_TEST_DATABASE_URL to a PostgreSQL server (.ci/run starts one)")
    name = f"wanforge_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Database]:
    if request.param == "sqlite":
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        url = settings.resolved_database_url()
    else:
        url = request.getfixturevalue("postgres_url")
        settings.database_url = url
    upgrade(url)
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
