from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from wanforge.api.app import create_app
from wanforge.config import Settings
from wanforge.store.db import Database


@pytest.fixture
def client(settings: Settings, db: Database) -> TestClient:
    return TestClient(create_app(settings, db))


@pytest.fixture
def auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}
