"""Schema fuzzing: schemathesis drives every operation of the app's own OpenAPI document, in
process (ASGI), with a valid API key, and checks each answer against what the document declares:
no 5xx, the declared status codes, content types and response bodies.

The run is bounded and deterministic (a fixed number of examples per operation, derandomized), so
CI is stable. Submissions create real predictions in a throwaway SQLite store; no worker runs and
the app sends no webhooks, and any outbound connection or DNS lookup fails the test.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy
from schemathesis.checks import not_a_server_error
from schemathesis.hooks import HookContext
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from wanforge.api.app import create_app
from wanforge.config import Settings
from wanforge.media.storage import LocalStorage
from wanforge.store.db import Database
from wanforge.store.keys import create_key
from wanforge.store.migrate import upgrade
from wanforge.store.tables import Prediction
from wanforge.vocabulary import ErrorCode, Status, WebhookState

# CI's bound (about 25 s on 2 cores); WANFORGE_FUZZ_EXAMPLES=500 searches deeper by hand
EXAMPLES_PER_OPERATION = int(os.environ.get("WANFORGE_FUZZ_EXAMPLES", "25"))
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
    # a full queue answers 503/5003 (documented, tested in test_quotas.py): never full here, as
    # nothing takes predictions off it, so every 5xx is a finding
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("fuzz") / "data", max_queued=10**9, default_max_queued=0
    )
    settings.data_dir.mkdir(parents=True)
    url = settings.resolved_database_url()
    upgrade(url)
    db = Database(url)
    plaintext, key_row = create_key(db, "fuzz")
    _seed(db, LocalStorage(settings.storage_dir), key_row.id)
    yield create_app(settings, db, send_webhooks=False), plaintext
    db.dispose()


# What the store holds before the run, under fixed ids (uuid4 hex, as the store makes them): the path parameters below draw from these
# as well as from random text, so GET, cancel and /files answer 200 and their bodies are checked.
NOW = datetime(2025, 1, 2, 3, 4, 5)
FILE_KEYS = ("outputs/fuzzdone/video.mp4", "outputs/fuzzlora/high_noise.safetensors", "uploads/fuzz/cat.png")
PREDICTIONS: dict[str, dict[str, Any]] = {
    "fffffffffffffffffffffffffffffff0": {"status": Status.CREATED},
    "fffffffffffffffffffffffffffffff1": {
        "status": Status.PROCESSING,
        "started_at": NOW,
        "attempts": 1,
        "progress": {"step": 3, "total": 20},
    },
    "fffffffffffffffffffffffffffffff2": {
        "status": Status.COMPLETED,
        "started_at": NOW,
        "completed_at": NOW,
        "attempts": 1,
        "inference_ms": 1234,
        "outputs": [FILE_KEYS[0]],
        "result": {
            "seed": 7,
            "nsfw": [False],
            "expanded_prompt": "a cat, slowly",
            "timings": {"lora_load": 5},
        },
        "logs": ["loaded", "done"],
        "webhook_url": "http://127.0.0.1:9/hook",
        "webhook_state": WebhookState.FAILED,
        "webhook_attempts": 6,
        "webhook_error": "connection refused",
    },
    "fffffffffffffffffffffffffffffff3": {
        "status": Status.COMPLETED,
        "model": "wavespeed-ai/wan-2.2-i2v-lora-trainer",
        "kind": "train",
        "completed_at": NOW,
        "outputs": [FILE_KEYS[1]],
        "result": {"named_outputs": {"high_noise_lora": FILE_KEYS[1]}},
    },
    "fffffffffffffffffffffffffffffff4": {
        "status": Status.FAILED,
        "completed_at": NOW,
        "error": "invalid parameter image: not an image",
        "error_code": ErrorCode.INVALID_PARAMETER,
    },
    "fffffffffffffffffffffffffffffff5": {
        "status": Status.CANCELLED,
        "completed_at": NOW,
        "cancel_requested": True,
    },
}


def _seed(db: Database, storage: LocalStorage, owner: str) -> None:
    for key in FILE_KEYS:
        storage.put_bytes(key, b"\x00fuzz" * 100)
    with db.session() as s:
        for prediction_id, values in PREDICTIONS.items():
            row = {
                "model": "alibaba/wan-2.2/i2v-plus-480p",
                "kind": "generate",
                "input": {"image": "https://example.com/cat.png", "prompt": "a cat"},
                "server_base": "http://testserver",
                "created_at": NOW,
                "api_key_id": owner,
                **values,
            }
            s.add(Prediction(id=prediction_id, **row))


KNOWN_PATH_VALUES: dict[str, tuple[str, ...]] = {"prediction_id": tuple(PREDICTIONS), "key": FILE_KEYS}


def _document() -> dict[str, Any]:
    """The OpenAPI document exactly as `GET /openapi.json` serves it. Loaded at import, as the
    pytest integration needs, from an app on an in-memory store it never opens (schemathesis'
    lazy `from_fixture` loader fails on pytest 9: it sets the removed `Node._nodeid`)."""
    return create_app(Settings(database_url="sqlite://"), send_webhooks=False).openapi()


schema = schemathesis.openapi.from_dict(_document())


@schema.hook
def before_generate_path_parameters(context: HookContext, strategy: SearchStrategy[Any]) -> Any:
    """Path parameters are random text, or ids and file keys the store has."""
    operation = context.operation
    names = re.findall(r"{(\w+)}", operation.path if operation is not None else "")
    known = {name: KNOWN_PATH_VALUES[name] for name in names if name in KNOWN_PATH_VALUES}
    if not known or len(known) != len(names):
        return strategy
    return st.one_of(strategy, st.fixed_dictionaries({n: st.sampled_from(v) for n, v in known.items()}))


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
