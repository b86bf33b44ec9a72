"""enable_sync_mode: waits on the status column only, and stops for a gone client or a shutdown.

The submit route is driven as a raw ASGI call (tests/api/asgi.py) so the test decides exactly when
the client disconnects; store reads are counted, so nothing here depends on timing.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update
from starlette.types import Message

from tests.api import asgi
from wanforge.api import routes_predictions
from wanforge.api.app import create_app
from wanforge.config import Settings
from wanforge.store import jobs
from wanforge.store.db import Database
from wanforge.store.tables import Prediction
from wanforge.vocabulary import Status

I2V = "/api/v3/alibaba/wan-2.2/i2v-plus-480p"
BODY = {"image": "https://example.com/cat.png", "prompt": "a cat", "enable_sync_mode": True}


def _submit(app: FastAPI, key: str, after_body: Callable[[], Awaitable[Message]]) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    answer = asgi.call(
        app, "POST", I2V, headers=headers, chunks=[json.dumps(BODY).encode()], after_body=after_body
    )
    return answer.status, answer.json()


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts full prediction rows and status-only reads made by the API."""
    counts: Counter[str] = Counter()
    full, status_only = jobs.get_prediction, getattr(jobs, "get_status", None)

    def get_prediction(db: Database, prediction_id: str) -> Any:
        counts["row"] += 1
        return full(db, prediction_id)

    def get_status(db: Database, prediction_id: str) -> Any:
        counts["status"] += 1
        return status_only(db, prediction_id) if status_only else None

    monkeypatch.setattr(jobs, "get_prediction", get_prediction)
    monkeypatch.setattr(jobs, "get_status", get_status, raising=False)
    monkeypatch.setattr(routes_predictions, "SYNC_POLL_S", 0.0, raising=False)
    return counts


@pytest.fixture
def app(settings: Settings, db: Database) -> FastAPI:
    settings.sync_mode_timeout_s = 3.0  # only reached by a broken waiter
    return create_app(settings, db)


def test_waiter_stops_when_the_client_disconnects(
    app: FastAPI, db: Database, api_key: str, reads: Counter[str]
) -> None:
    status, body = _submit(app, api_key, asgi.gone)
    assert status == 200 and body["data"]["status"] == "created"
    # the client was gone before the first poll: no status read, and no full row read at all
    assert reads == Counter()
    assert jobs.get_status(db, body["data"]["id"]) == "created"  # the task itself goes on


def test_waiter_reads_only_the_status_until_the_end(
    app: FastAPI, db: Database, api_key: str, reads: Counter[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = jobs.get_status  # the fixture's counting wrapper

    def get_status(database: Database, prediction_id: str) -> Any:
        if reads["status"] == 2:  # the task ends between polls 2 and 3
            with database.session() as s:
                s.execute(
                    update(Prediction)
                    .where(Prediction.id == prediction_id)
                    .values(jobs.ended(Status.CANCELLED))
                )
        return counted(database, prediction_id)

    monkeypatch.setattr(jobs, "get_status", get_status)
    status, body = _submit(app, api_key, asgi.never)
    assert status == 200 and body["code"] == 200 and body["data"]["status"] == "cancelled"
    assert reads == Counter(status=3, row=1)  # one full row: the answer


def test_waiter_ends_at_shutdown(app: FastAPI, api_key: str, reads: Counter[str]) -> None:
    app.state.stopping.set()
    status, body = _submit(app, api_key, asgi.never)
    assert status == 200 and body["code"] == 5004 and body["data"]["code"] == 5004
    assert "shutting down" in body["data"]["error"] and body["data"]["status"] == "created"
    assert reads == Counter(row=1)  # the answer


def test_shutdown_is_signalled_to_waiters(settings: Settings, db: Database) -> None:
    app = create_app(settings, db)
    with TestClient(app):
        assert not app.state.stopping.is_set()
    assert app.state.stopping.is_set()  # lifespan shutdown
    app = create_app(settings, db)
    from wanforge.api.app import make_server

    server = make_server(app, settings)
    server.handle_exit(signal.SIGTERM, None)  # uvicorn drains requests before lifespan shutdown
    assert server.should_exit and app.state.stopping.is_set()
