"""Webhook delivery from the store: signed POST, retries with back-off, giving up, SSRF rules."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.webhooks.receiver import finished, webhook_receiver
from wanforge.config import Settings
from wanforge.predictions import prediction_out
from wanforge.store import jobs
from wanforge.store.db import Database
from wanforge.webhooks import signing
from wanforge.webhooks.secret import webhook_secret
from wanforge.webhooks.sender import WebhookSender


def test_delivers_a_signed_prediction(settings: Settings, db: Database) -> None:
    with webhook_receiver() as receiver:
        pid = finished(db, receiver.url)
        sender = WebhookSender(db, settings)
        assert sender.send_due() == 1
        assert sender.send_due() == 0  # delivered once
    [got] = receiver.received
    secret = webhook_secret(db)
    assert secret.startswith("whsec_")
    assert signing.verify(secret, got.headers, got.body, tolerance_s=60, now=int(time.time()))
    assert got.headers["webhook-id"] == pid and got.headers["content-type"] == "application/json"
    data = json.loads(got.body)
    assert data["id"] == pid and data["status"] == "completed" and data["seed"] == 4
    assert data["outputs"] == ["http://api.example/files/outputs/t/v.mp4"]
    assert "webhook" not in data  # the delivery's own state is not part of what it delivers
    row = jobs.get_prediction(db, pid)
    assert row is not None and row.webhook_state == "delivered" and row.webhook_attempts == 1
    assert prediction_out(row, "").model_dump()["webhook"] == {
        "status": "delivered",
        "attempts": 1,
        "last_error": "",
    }


def test_each_delivery_is_signed_with_its_keys_secret(settings: Settings, db: Database) -> None:
    from wanforge.store.keys import create_key

    one, two = (create_key(db, name)[1].id for name in ("one", "two"))
    with webhook_receiver() as receiver:
        ids = {finished(db, receiver.url, one): one, finished(db, receiver.url, two): two}
        assert WebhookSender(db, settings).send_due() == 2
    assert len(receiver.received) == 2
    now = int(time.time())
    for got in receiver.received:
        owner = ids[got.headers["webhook-id"]]
        other = two if owner == one else one
        assert signing.verify(webhook_secret(db, owner), got.headers, got.body, tolerance_s=60, now=now)
        assert not signing.verify(webhook_secret(db, other), got.headers, got.body, tolerance_s=60, now=now)
        assert not signing.verify(webhook_secret(db), got.headers, got.body, tolerance_s=60, now=now)


def test_retries_with_backoff_then_delivers(settings: Settings, db: Database) -> None:
    settings.webhook_retry_base_s = 0.2
    with webhook_receiver(statuses=[500, 503]) as receiver:
        pid = finished(db, receiver.url)
        sender = WebhookSender(db, settings)
        assert sender.send_due() == 1
        assert sender.send_due() == 0  # not due yet
        row = jobs.get_prediction(db, pid)
        assert row is not None and row.webhook_state == "pending" and "HTTP 500" in row.webhook_error
        deadline = time.monotonic() + 5
        while receiver.statuses or not receiver.arrived.is_set():
            sender.send_due()
            time.sleep(0.05)
            assert time.monotonic() < deadline
    row = jobs.get_prediction(db, pid)
    assert row is not None and row.webhook_state == "delivered" and row.webhook_attempts == 3
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1  # same id on every retry


def test_gives_up_after_max_attempts(settings: Settings, db: Database) -> None:
    settings.webhook_retry_base_s = 0.0
    settings.webhook_max_attempts = 2
    with webhook_receiver(statuses=[500, 500, 500]) as receiver:
        pid = finished(db, receiver.url)
        sender = WebhookSender(db, settings)
        sender.send_due()
        sender.send_due()
        assert sender.send_due() == 0
    row = jobs.get_prediction(db, pid)
    assert row is not None and row.webhook_state == "failed" and row.webhook_attempts == 2
    assert len(receiver.received) == 2
    assert prediction_out(row, "").model_dump()["webhook"] == {
        "status": "failed",
        "attempts": 2,
        "last_error": "the webhook answered HTTP 500",
    }


def test_private_address_fails_at_once_unless_allowed(settings: Settings, db: Database) -> None:
    settings.allow_private_urls = False
    settings.webhook_retry_base_s = 0.0
    assert settings.webhook_max_attempts > 1
    with webhook_receiver() as receiver:
        pid = finished(db, receiver.url)
        sender = WebhookSender(db, settings)
        assert sender.send_due() == 1
        assert sender.send_due() == 0  # a refusal by policy is permanent: not retried
    assert receiver.received == []
    row = jobs.get_prediction(db, pid)
    assert row is not None and row.webhook_state == "failed" and row.webhook_attempts == 1
    assert row.webhook_error == (
        "webhook URL resolves to a loopback address 127.0.0.1; set WANFORGE_ALLOW_PRIVATE_URLS=1 to allow it"
    )


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("http:///hook", "webhook URL has no host name"),
        ("ftp://example.com/hook", "webhook URL must be an http or https URL, not ftp:"),
        ("example.com/hook", "webhook URL must be an http or https URL, and this one has no scheme"),
        ("https://[zz]/hook", "webhook URL is not a valid URL: Invalid IPv6 address: '[zz]'"),
        (
            "http://10.0.0.1/hook",
            "webhook URL resolves to a private address 10.0.0.1; "
            "set WANFORGE_ALLOW_PRIVATE_URLS=1 to allow it",
        ),
    ],
)
def test_undeliverable_url_fails_at_once(settings: Settings, db: Database, url: str, error: str) -> None:
    settings.allow_private_urls = False
    settings.webhook_retry_base_s = 0.0
    pid = finished(db, url)
    sender = WebhookSender(db, settings)
    assert sender.send_due() == 1
    assert sender.send_due() == 0
    row = jobs.get_prediction(db, pid)
    assert row is not None and (row.webhook_state, row.webhook_attempts) == ("failed", 1)
    assert row.webhook_error == error


def test_connection_refused_is_retried(settings: Settings, db: Database) -> None:
    settings.webhook_retry_base_s = 0.0
    with socket.socket() as unused:  # a live host with nothing listening on this port
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    pid = finished(db, f"http://127.0.0.1:{port}/hook")
    sender = WebhookSender(db, settings)
    assert sender.send_due() == 1
    row = jobs.get_prediction(db, pid)
    assert row is not None and (row.webhook_state, row.webhook_attempts) == ("pending", 1)
    assert row.webhook_error.startswith(f"webhook URL: cannot connect to 127.0.0.1 port {port}: ")
    assert sender.send_due() == 1  # tried again


def test_unfinished_and_hookless_predictions_are_not_sent(settings: Settings, db: Database) -> None:
    with webhook_receiver() as receiver:
        finished(db, None)
        jobs.create_prediction(
            db, model="m", kind="generate", input={}, server_base="", max_attempts=3, webhook_url=receiver.url
        )
        assert WebhookSender(db, settings).send_due() == 0
    assert receiver.received == []
