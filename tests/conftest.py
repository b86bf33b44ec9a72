"""Shared fixtures: settings in a temporary data directory, a migrated store, an API key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from wanforge.config import Settings
from wanforge.store.db import Database
from wanforge.store.keys import create_key
from wanforge.store.migrate import upgrade


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", allow_private_urls=True, lease_s=3.0, poll_interval_s=0.1)


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url()
    upgrade(url)
    database = Database(url)
    yield database
    database.dispose()


@pytest.fixture
def api_key(db: Database) -> str:
    plaintext, _ = create_key(db, "test")
    return plaintext
