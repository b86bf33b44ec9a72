"""Over a key's limit the submit answers 429 with Retry-After; a full queue 503/5003; both in the
envelope. The clock is the app's, injected."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi.testclient import TestClient

from wanforge.api.app import create_app
from wanforge.config import Settings
from wanforge.store.db import Database
from wanforge.store.keys import KeyOptions, create_key

I2V = "/api/v3/alibaba/wan-2.2/i2v-plus-480p"
GOOD = {"image": "https://example.com/cat.png", "prompt": "a cat walks"}


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _app(settings: Settings, db: Database, clock: Clock) -> TestClient:
    app = create_app(settings, db)
    app.state.wanforge.clock = clock
    return TestClient(app)


def _key(db: Database, **options: int) -> dict[str, str]:
    plaintext, _ = create_key(db, "k", KeyOptions(**options))  # type: ignore[arg-type]
    return {"Authorization": f"Bearer {plaintext}"}


def test_rate_limit_answers_429_with_retry_after(settings: Settings, db: Database) -> None:
    clock = Clock(datetime(2026, 5, 1, 12, 0, 15))
    client = _app(settings, db, clock)
    auth = _key(db, rpm=2)
    assert [client.post(I2V, headers=auth, json=GOOD).status_code for _ in range(2)] == [200, 200]
    over = client.post(I2V, headers=auth, json=GOOD)
    assert over.status_code == 429 and over.headers["retry-after"] == "45"
    assert over.json() == {
        "code": 429,
        "message": "rate limit reached: this key may submit 2 predictions per minute; retry after 45 s",
        "data": None,
    }
    clock.now += timedelta(seconds=45)
    assert client.post(I2V, headers=auth, json=GOOD).status_code == 200


def test_server_default_rate_and_the_keys_own(settings: Settings, db: Database) -> None:
    settings.default_rpm = 1
    client = _app(settings, db, Clock(datetime(2026, 5, 1, 12, 0, 0)))
    default, own, unlimited = _key(db), _key(db, rpm=3), _key(db, rpm=0)
    assert [client.post(I2V, headers=default, json=GOOD).status_code for _ in range(2)] == [200, 429]
    assert [client.post(I2V, headers=own, json=GOOD).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert [client.post(I2V, headers=unlimited, json=GOOD).status_code for _ in range(4)] == [200] * 4


def test_concurrency_limit_answers_429(settings: Settings, db: Database) -> None:
    settings.retry_after_s = 12
    client = _app(settings, db, Clock(datetime(2026, 5, 1, 12, 0, 0)))
    auth = _key(db, concurrency=1)
    first = client.post(I2V, headers=auth, json=GOOD).json()["data"]["id"]
    over = client.post(I2V, headers=auth, json=GOOD)
    assert over.status_code == 429 and over.headers["retry-after"] == "12"
    assert over.json()["code"] == 429
    assert over.json()["message"].startswith("concurrency limit reached: this key may have 1 predictions")
    assert client.delete(f"/api/v3/predictions/{first}", headers=auth).status_code == 200
    assert client.post(I2V, headers=auth, json=GOOD).status_code == 200


def test_a_full_queue_answers_503_5003_to_the_key_filling_it_only(settings: Settings, db: Database) -> None:
    settings.max_queued = 1
    settings.retry_after_s = 30
    client = _app(settings, db, Clock(datetime(2026, 5, 1, 12, 0, 0)))
    flooder = _key(db)
    assert client.post(I2V, headers=flooder, json=GOOD).status_code == 200
    full = client.post(I2V, headers=flooder, json=GOOD)
    assert full.status_code == 503 and full.headers["retry-after"] == "30"
    assert full.json() == {
        "code": 5003,
        "message": "the server's queue is full (1 predictions waiting); retry after 30 s",
        "data": None,
    }
    assert client.post(I2V, headers=_key(db), json=GOOD).status_code == 200  # another key's first


def test_a_keys_queue_cap_answers_429_and_leaves_the_others_alone(settings: Settings, db: Database) -> None:
    settings.default_max_queued = 2
    client = _app(settings, db, Clock(datetime(2026, 5, 1, 12, 0, 0)))
    capped, own, admin = _key(db), _key(db, max_queued=3), _key(db, is_admin=True)
    assert [client.post(I2V, headers=capped, json=GOOD).status_code for _ in range(3)] == [200, 200, 429]
    over = client.post(I2V, headers=capped, json=GOOD)
    assert over.headers["retry-after"] == str(settings.retry_after_s)
    assert over.json() == {
        "code": 429,
        "message": "queue limit reached: this key may have 2 predictions waiting in the queue; "
        f"retry after {settings.retry_after_s} s, or cancel one",
        "data": None,
    }
    assert [client.post(I2V, headers=own, json=GOOD).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert [client.post(I2V, headers=admin, json=GOOD).status_code for _ in range(3)] == [200, 200, 429]


def test_documented_in_openapi(settings: Settings, db: Database) -> None:
    client = _app(settings, db, Clock(datetime(2026, 5, 1)))
    responses = client.get("/openapi.json").json()["paths"][I2V]["post"]["responses"]
    assert {"429", "503"} <= set(responses)
