from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from wanforge.api.app import create_app
from wanforge.config import Settings
from wanforge.store.db import Database
from wanforge.store.keys import hash_key
from wanforge.store.tables import ApiKey


@pytest.fixture
def client(settings: Settings, db: Database) -> TestClient:
    return TestClient(create_app(settings, db))


@pytest.fixture
def auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


@pytest.fixture
def owner(db: Database, api_key: str) -> str:
    """The id of `api_key`: the owner of what it makes."""
    with db.session() as s:
        row = s.query(ApiKey).filter_by(key_hash=hash_key(api_key)).one()
    return row.id
