"""`?webhook=` is checked at submit: a URL that can never be delivered is a 400/1401 naming it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from wanforge.api.app import create_app
from wanforge.config import Settings
from wanforge.store.db import Database

I2V = "/api/v3/alibaba/wan-2.2/i2v-plus-1080p"
GOOD = {"image": "https://example.com/cat.png", "prompt": "a cat walks"}
PRIVATE_HINT = "set WANFORGE_ALLOW_PRIVATE_URLS=1 to allow it"


@pytest.fixture
def auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


@pytest.mark.parametrize(
    ("webhook", "detail"),
    [
        ("ftp://example.com/hook", "webhook URL must be an http or https URL, not ftp:"),
        ("example.com/hook", "webhook URL must be an http or https URL, and this one has no scheme"),
        ("", "webhook URL must be an http or https URL, and this one has no scheme"),
        ("http:///hook", "webhook URL has no host name"),
        ("https://[zz]/hook", "webhook URL is not a valid URL: Invalid IPv6 address: '[zz]'"),
        ("https://example.com/" + "a" * 8200, "webhook URL is longer than 8192 characters"),
        (
            "http://127.0.0.1:8000/hook",
            f"webhook URL resolves to a loopback address 127.0.0.1; {PRIVATE_HINT}",
        ),
        ("http://[::1]/hook", f"webhook URL resolves to a loopback address ::1; {PRIVATE_HINT}"),
        ("http://10.1.2.3/hook", f"webhook URL resolves to a private address 10.1.2.3; {PRIVATE_HINT}"),
        (
            "http://169.254.169.254/",
            f"webhook URL resolves to a link-local address 169.254.169.254; {PRIVATE_HINT}",
        ),
        # the shorthand IPv4 forms the resolver accepts reach the same addresses
        ("http://127.1/", f"webhook URL resolves to a loopback address 127.0.0.1; {PRIVATE_HINT}"),
        ("http://2130706433/", f"webhook URL resolves to a loopback address 127.0.0.1; {PRIVATE_HINT}"),
        ("http://0x7f000001/", f"webhook URL resolves to a loopback address 127.0.0.1; {PRIVATE_HINT}"),
        ("http://0177.0.0.1/", "webhook URL is not a valid URL: Invalid IPv4 address: '0177.0.0.1'"),
        ("http://0/", f"webhook URL resolves to an unspecified address 0.0.0.0; {PRIVATE_HINT}"),
        # never deliverable, so never worth a retry
        ("http://exa mple.com/", "webhook URL has an invalid host name"),
        ("https://example.com:99999/", "webhook URL has an invalid port 99999"),
    ],
)
def test_undeliverable_webhook_is_refused(
    settings: Settings, db: Database, auth: dict[str, str], webhook: str, detail: str
) -> None:
    settings.allow_private_urls = False
    client = TestClient(create_app(settings, db))
    resp = client.post(I2V, params={"webhook": webhook}, headers=auth, json=GOOD)
    assert resp.status_code == 400, resp.text
    assert resp.json() == {"code": 1401, "message": f"invalid parameter webhook: {detail}", "data": None}
    assert client.post("/api/v3/predictions", headers=auth, json={}).json()["data"]["total"] == 0


@pytest.mark.parametrize(
    ("webhook", "allow_private"),
    [
        ("https://example.com/hook?x=1", False),  # a host name is judged when it is resolved, at delivery
        ("  https://example.com/hook  ", False),
        ("http://127.0.0.1:8000/hook", True),
    ],
)
def test_deliverable_webhook_is_accepted(
    settings: Settings, db: Database, auth: dict[str, str], webhook: str, allow_private: bool
) -> None:
    settings.allow_private_urls = allow_private
    client = TestClient(create_app(settings, db))
    resp = client.post(I2V, params={"webhook": webhook}, headers=auth, json=GOOD)
    assert resp.status_code == 200, resp.text


def test_prediction_shows_its_webhook_delivery(
    settings: Settings, db: Database, auth: dict[str, str]
) -> None:
    client = TestClient(create_app(settings, db))
    hooked = client.post(I2V, params={"webhook": "https://example.com/hook"}, headers=auth, json=GOOD).json()
    assert hooked["data"]["webhook"] == {"status": "pending", "attempts": 0, "last_error": ""}
    plain = client.post(I2V, headers=auth, json=GOOD).json()
    assert plain["data"]["webhook"] is None
    got = client.get(f"/api/v3/predictions/{hooked['data']['id']}/result", headers=auth).json()
    assert got["data"]["webhook"] == {"status": "pending", "attempts": 0, "last_error": ""}
