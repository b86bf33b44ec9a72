"""Connection pools sized per process from the settings: an API process's, a worker's."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.pool import QueuePool

from wanforge.config import Settings
from wanforge.store.db import Database, PoolLimits


def test_pool_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in {
        "DB_POOL_SIZE": "7",
        "DB_MAX_OVERFLOW": "3",
        "DB_WORKER_POOL_SIZE": "1",
        "DB_POOL_TIMEOUT_S": "4.5",
        "DB_POOL_RECYCLE_S": "60",
    }.items():
        monkeypatch.setenv(f"WANFORGE_{name}", value)
    settings = Settings(data_dir=tmp_path)
    assert PoolLimits.from_settings(settings) == PoolLimits(7, 3, 4.5, 60.0)
    assert PoolLimits.from_settings(settings, worker=True) == PoolLimits(1, 1, 4.5, 60.0)


def test_defaults(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert PoolLimits.from_settings(settings) == PoolLimits(5, 10, 30.0, 1800.0)
    assert PoolLimits.from_settings(settings, worker=True) == PoolLimits(2, 2, 30.0, 1800.0)


def test_the_engine_uses_the_limits(db: Database) -> None:
    sized = Database(db.url, PoolLimits(size=3, overflow=4, timeout_s=2.5, recycle_s=90.0))
    try:
        pool = sized.engine.pool
        assert isinstance(pool, QueuePool)
        assert (pool.size(), pool._max_overflow, pool._timeout) == (3, 4, 2.5)
        if db.engine.dialect.name == "postgresql":
            assert pool._recycle == 90.0
    finally:
        sized.dispose()


def test_in_memory_sqlite_takes_no_pool_sizes() -> None:
    """`sqlite://` and `sqlite:///:memory:` keep one connection per thread: sizes would be refused."""
    from wanforge.store.db import make_engine

    for url in ("sqlite://", "sqlite:///:memory:"):
        engine = make_engine(url)
        assert type(engine.pool).__name__ == "SingletonThreadPool", url
        engine.dispose()
