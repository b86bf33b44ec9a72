"""Plain bad input never answers 5xx: each is 400 in the envelope, naming the field or the body."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

I2V = "/api/v3/alibaba/wan-2.2/i2v-plus-480p"
TRAINER = "/api/v3/wavespeed-ai/wan-2.2-i2v-lora-trainer"
LIST = "/api/v3/predictions"
GOOD = {"image": "https://example.com/cat.png", "prompt": "a cat walks"}


def _err(resp: Any, status: int, code: int, *needles: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"code", "message", "data"} and body["data"] is None, body
    assert body["code"] == code, body
    for needle in needles:
        assert needle in body["message"], body


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"page": 10000000000000000000}', "page"),
        ('{"page": 100000000000000}', "page"),
        ('{"page": 0}', "page"),
        ('{"page_size": 101}', "page_size"),
        ('{"created_after": "9999-12-31T23:59:59-01:00"}', "created_after"),
        ('{"created_before": "9999-12-31T23:59:59-01:00"}', "created_before"),
        ('{"created_after": "0001-01-01T00:00:00+01:00"}', "created_after"),
        ('{"created_after": "not a time"}', "created_after"),
        ('{"status": "running"}', "status"),
        ('{"status": 5}', "status"),
        ('{"model": "' + "m" * 201 + '"}', "model"),
        ('{"page": 1e400}', "page"),
        ('{"page": NaN}', "page"),
        ('{"page": [[[1]]]}', "page"),
    ],
)
def test_list_filters_are_bounded(client: TestClient, auth: dict[str, str], raw: str, field: str) -> None:
    resp = client.post(LIST, headers={**auth, "Content-Type": "application/json"}, content=raw.encode())
    _err(resp, 400, 1401, field)


def test_list_last_allowed_page_is_empty(client: TestClient, auth: dict[str, str]) -> None:
    resp = client.post(LIST, headers=auth, json={"page": 100_000, "page_size": 100})
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["items"] == [] and resp.json()["data"]["page"] == 100_000


def test_list_status_filter_takes_every_status(client: TestClient, auth: dict[str, str]) -> None:
    for status in ("created", "processing", "completed", "failed", "cancelled"):
        resp = client.post(LIST, headers=auth, json={"status": status})
        assert resp.status_code == 200 and resp.json()["data"]["total"] == 0, resp.text
