"""Database engine and sessions: SQLite in WAL mode by default, any SQLAlchemy URL by setting."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    from wanforge.config import Settings

_ROW_ID = re.compile(r"[0-9a-f]{32}")

# The store is unreachable for now, not wrong: a locked SQLite file, a lost or refused connection
# (a PostgreSQL restart or failover), a pool with no free connection. Workers retry through these
# (worker/retry.py); the API answers 503/5003 with a Retry-After (api/errors.py).
STORE_UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError, PoolTimeout)


def is_row_id(value: str) -> bool:
    """Whether ``value`` has the shape of the ids this store makes (uuid4 hex). Anything else
    names no row, and is answered as unknown without a query: PostgreSQL refuses some text (a
    NUL character) outright, which must not turn an unknown id into a 500."""
    return _ROW_ID.fullmatch(value) is not None


def utcnow() -> datetime:
    """Naive UTC (what the tables store)."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class PoolLimits:
    """A process's connection pool: `size` connections kept open, up to `overflow` more opened
    under load, `timeout_s` to wait for a free one, each reopened after `recycle_s` (PostgreSQL).

    Size the server for them: N API processes and M workers hold at most
    N * (api size + overflow) + M * 2 * worker size connections (docs/configuration.md)."""

    size: int = 5
    overflow: int = 10
    timeout_s: float = 30.0
    recycle_s: float = 1800.0

    @classmethod
    def from_settings(cls, settings: Settings, *, worker: bool = False) -> PoolLimits:
        """An API process's pool, or a worker's (its job loop and lease heartbeat: a few)."""
        size = settings.db_worker_pool_size if worker else settings.db_pool_size
        return cls(
            size=size,
            overflow=size if worker else settings.db_max_overflow,
            timeout_s=settings.db_pool_timeout_s,
            recycle_s=settings.db_pool_recycle_s,
        )


def make_engine(url: str, pool: PoolLimits | None = None) -> Engine:
    pool = pool or PoolLimits()
    sizing: dict[str, Any] = {
        "pool_size": pool.size,
        "max_overflow": pool.overflow,
        "pool_timeout": pool.timeout_s,
    }
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        else:  # in-memory: SQLAlchemy keeps one connection per thread, no sizes to set
            sizing = {}
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **sizing)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_recycle=pool.recycle_s, **sizing)


class Database:
    """An engine plus a session factory; one per process."""

    def __init__(self, url: str, pool: PoolLimits | None = None) -> None:
        self.url = url
        self.engine = make_engine(url, pool)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # one read outside any transaction: no BEGIN / COMMIT round trips on PostgreSQL (SQLite
        # begins no transaction for a read anyway, and switching its mode costs statements)
        self._reader = (
            self.engine
            if self.engine.dialect.name == "sqlite"
            else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection for a single read statement outside a transaction (hot paths: polls)."""
        with self._reader.connect() as conn:
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()
