"""The job store unreachable (a PostgreSQL restart, a failover, a locked SQLite file): every
route answers 503 with code 5003 and a Retry-After, never a 500, and recovers by itself."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from wanforge.store.db import Database
from wanforge.vocabulary import ErrorCode

OUTAGES = [
    OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused")),
    InterfaceError("SELECT 1", {}, ConnectionResetError("connection already closed")),
    PoolTimeout("QueuePool limit of size 5 overflow 10 reached"),
]


@contextmanager
def store_down(monkeypatch: pytest.MonkeyPatch, error: Exception) -> Iterator[None]:
    def fail(*_a: Any, **_k: Any) -> Any:
        raise error

    with monkeypatch.context() as m:
        m.setattr(Database, "session", fail)
        m.setattr(Database, "reading", fail)
        yield


@pytest.mark.parametrize("error", OUTAGES, ids=lambda e: type(e).__name__)
def test_routes_answer_503_while_the_store_is_down(
    client: TestClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    submitted = client.post(
        "/api/v3/alibaba/wan-2.2/i2v-plus-480p",
        json={"image": "https://example.com/a.png", "prompt": "x"},
        headers=auth,
    )
    assert submitted.status_code == 200, submitted.text
    pid = submitted.json()["data"]["id"]
    with store_down(monkeypatch, error):
        for method, path, body in (
            ("GET", f"/api/v3/predictions/{pid}/result", None),
            ("GET", f"/api/v3/predictions/{pid}", None),
            (
                "POST",
                "/api/v3/alibaba/wan-2.2/i2v-plus-480p",
                {"image": "https://example.com/a.png", "prompt": "x"},
            ),
            ("GET", "/api/v3/predictions", None),
        ):
            resp = client.request(method, path, json=body, headers=auth)
            assert resp.status_code == 503, (path, resp.text)
            assert resp.json() == {
                "code": ErrorCode.UNAVAILABLE,
                "message": "the job store is unavailable; try again shortly",
                "data": None,
            }
            assert int(resp.headers["Retry-After"]) >= 1
        # /health still answers 200 for load balancers, and says it is degraded
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "degraded"
    # the outage over: the prediction submitted before it is all there
    resp = client.get(f"/api/v3/predictions/{pid}/result", headers=auth)
    assert resp.status_code == 200 and resp.json()["data"]["id"] == pid


def test_the_key_check_answers_503_while_the_store_is_down(
    settings: Any, db: Database, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key not in the process's cache must be read from the store: 503, not 401 or 500."""
    from wanforge.api.app import create_app

    client = TestClient(create_app(settings, db))  # a fresh process: nothing cached
    with store_down(monkeypatch, OUTAGES[0]):
        resp = client.get("/api/v3/predictions/" + "0" * 32 + "/result", headers=auth)
    assert resp.status_code == 503
    assert resp.json()["code"] == ErrorCode.UNAVAILABLE
    assert resp.headers["retry-after"] == "2"
    assert client.get("/api/v3/predictions/" + "0" * 32 + "/result", headers=auth).status_code == 404
