"""The verified-key cache: bounded in time (revocation takes effect within WANFORGE_KEY_CACHE_S),
a cached key's own expiry holds to the second, unknown keys are never cached."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from wanforge.api.app import create_app
from wanforge.api.keycache import KeyCache
from wanforge.config import Settings
from wanforge.store import keys as store_keys
from wanforge.store.db import Database
from wanforge.store.tables import ApiKey

T0 = datetime(2030, 1, 1, 12, 0, 0)


class Clocks:
    def __init__(self) -> None:
        self.mono = 100.0
        self.wall = T0


def _cache(clocks: Clocks, ttl_s: float = 1.0, max_entries: int = 10) -> KeyCache:
    return KeyCache(ttl_s, max_entries, clock=lambda: clocks.mono, wall_clock=lambda: clocks.wall)


def _key(expires_at: datetime | None = None) -> ApiKey:
    return ApiKey(id="k1", prefix="wf_abcde", key_hash="h", created_at=T0, expires_at=expires_at)


def test_a_verified_key_is_kept_for_ttl_s_only() -> None:
    clocks = Clocks()
    cache = _cache(clocks)
    key = _key()
    cache.put("wf_secret", key)
    clocks.mono += 0.999
    assert cache.get("wf_secret") is key
    assert cache.get("wf_other") is None
    clocks.mono += 0.001  # the bound: a revocation is seen from here on
    assert cache.get("wf_secret") is None


def test_a_cached_keys_expiry_holds_to_the_second() -> None:
    clocks = Clocks()
    cache = _cache(clocks, ttl_s=5.0)
    cache.put("wf_secret", _key(expires_at=T0 + timedelta(seconds=1)))
    assert cache.get("wf_secret") is not None
    clocks.wall = T0 + timedelta(seconds=1)
    assert cache.get("wf_secret") is None


def test_ttl_zero_caches_nothing_and_size_is_bounded() -> None:
    clocks = Clocks()
    off = _cache(clocks, ttl_s=0.0)
    off.put("wf_secret", _key())
    assert off.get("wf_secret") is None
    small = _cache(clocks, max_entries=2)
    for token in ("a", "b", "c"):
        small.put(token, _key())
    assert [small.get(t) is not None for t in ("a", "b", "c")] == [False, True, True]


def test_the_setting_is_bounded(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="key_cache_s"):
        Settings(data_dir=tmp_path, key_cache_s=6.0)


def test_polls_read_the_key_once_per_ttl(
    settings: Settings, db: Database, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.key_cache_s = 5.0
    reads: list[str] = []

    def counting_verify(database: Database, token: str, **kw: Any) -> ApiKey | None:
        reads.append(token)
        return store_keys.verify_key(database, token, **kw)

    monkeypatch.setattr("wanforge.api.guard.verify_key", counting_verify)
    client = TestClient(create_app(settings, db))
    auth = {"Authorization": f"Bearer {api_key}"}
    missing = "0" * 32
    answers = [
        client.get(f"/api/v3/predictions/{missing}/result", headers=auth).status_code for _ in range(5)
    ]
    assert answers == [404] * 5 and reads == [api_key]
    bad = {"Authorization": "Bearer wf_not_a_key"}
    assert [
        client.get(f"/api/v3/predictions/{missing}/result", headers=bad).status_code for _ in range(2)
    ] == [
        401,
        401,
    ]
    assert reads == [api_key, "wf_not_a_key", "wf_not_a_key"]  # refusals are never cached
    # a key made now works at once, in a process that refused it a moment ago
    store_keys.ensure_key(db, "wf_not_a_key")
    assert client.get(f"/api/v3/predictions/{missing}/result", headers=bad).status_code == 404
