"""Schema fuzzing: schemathesis drives every operation of the app's own OpenAPI document, in
process (ASGI), with a valid API key, and checks each answer against what the document declares:
no 5xx, the declared status codes, content types and response bodies.

The run is bounded and deterministic (a fixed number of examples per operation, derandomized), so
CI is stable. Submissions create real predictions in a throwaway SQLite store; no worker runs and
the app sends no webhooks, and any outbound connection or DNS lookup fails the test.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from wanforge.api.app import create_app
from wanforge.config import Settings
from wanforge.store.db import Database
from wanforge.store.keys import create_key
from wanforge.store.migrate import upgrade

EXAMPLES_PER_OPERATION = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


class OutboundAttempt(AssertionError):
    pass


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Any DNS lookup or outbound connection (other than a local socket pair) raises, and is
    recorded so the test fails even if the app swallowed the error."""
    attempts: list[str] = []
    real_connect = socket.socket.connect

    def lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
        attempts.append(f"getaddrinfo {host!r}")
        raise OutboundAttempt(f"the app looked up {host!r}")

    def connect(self: socket.socket, address: Any) -> None:
        if self.family == socket.AF_UNIX:
            real_connect(self, address)
            return
        attempts.append(f"connect {address!r}")
        raise OutboundAttempt(f"the app connected to {address!r}")

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    monkeypatch.setattr(socket.socket, "connect", connect)
    yield attempts


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FastAPI, str]]:
    """One app, store and key for the whole run (a migration per operation would cost more than
    the fuzzing): predictions made by one operation's examples are seen by the next's."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("fuzz") / "data")
    settings.data_dir.mkdir(parents=True)
    url = settings.resolved_database_url()
    upgrade(url)
    db = Database(url)
    plaintext, _ = create_key(db, "fuzz")
    yield create_app(settings, db, send_webhooks=False), plaintext
    db.dispose()


def _document() -> dict[str, Any]:
    """The OpenAPI document exactly as `GET /openapi.json` serves it. Loaded at import, as the
    pytest integration needs, from an app on an in-memory store it never opens (schemathesis'
    lazy `from_fixture` loader fails on pytest 9: it sets the removed `Node._nodeid`)."""
    return create_app(Settings(database_url="sqlite://"), send_webhooks=False).openapi()


schema = schemathesis.openapi.from_dict(_document())


@schema.parametrize()
@hypothesis_settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_documented(
    case: schemathesis.Case[Any], fuzz_app: tuple[FastAPI, str], no_network: list[str]
) -> None:
    app, key = fuzz_app
    case.call_and_validate(app=app, headers={"Authorization": f"Bearer {key}"}, checks=CHECKS)
    assert no_network == []
