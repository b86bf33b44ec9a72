"""The database's clock, for leases: every host reads the same time, whatever its own clock says.

A lease written as "the host's now + 30 s" would let a host whose clock runs minutes ahead take
live jobs from others, and one whose clock runs behind hand out leases that are already over. So
lease times are computed by the database in the statement itself (`now()` on PostgreSQL; on
SQLite, which lives on one machine anyway, its `'now'`), as naive UTC like every stored time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, String, literal, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from wanforge.store.db import Database


class DbNow(FunctionElement[datetime]):
    """The database's current time (naive UTC) plus `offset_s` seconds, evaluated in SQL."""

    type = DateTime()
    name = "db_now"
    inherit_cache = True

    def __init__(self, offset_s: float = 0.0) -> None:
        # one bound text both dialects read as an interval: '+30.000000 seconds'
        super().__init__(literal(f"{offset_s:+.6f} seconds", String()))


@compiles(DbNow, "postgresql")
def _postgresql(element: DbNow, compiler: Any, **kw: Any) -> str:
    offset = compiler.process(element.clauses, **kw)
    return f"((now() AT TIME ZONE 'UTC') + CAST({offset} AS INTERVAL))"


@compiles(DbNow, "sqlite")
def _sqlite(element: DbNow, compiler: Any, **kw: Any) -> str:
    # the text SQLAlchemy stores a DateTime as ('2025-01-02 03:04:05.678000'), so that
    # comparisons with stored times (as text) are right; %f is seconds with milliseconds
    offset = compiler.process(element.clauses, **kw)
    return f"strftime('%Y-%m-%d %H:%M:%f000', 'now', {offset})"


@compiles(DbNow)
def _other(element: DbNow, compiler: Any, **kw: Any) -> str:
    raise NotImplementedError(f"wanforge's store runs on SQLite or PostgreSQL, not {compiler.dialect.name}")


def at(now: datetime | None, offset_s: float = 0.0) -> ColumnElement[datetime]:
    """The lease clock `offset_s` seconds from now: the database's own (`now` None), or `now` as
    a test's stand-in for the database's clock (so leases are tested without sleeping)."""
    if now is None:
        return DbNow(offset_s)
    return literal(now + timedelta(seconds=offset_s), DateTime())


def database_now(db: Database) -> datetime:
    """What the database's clock says now (naive UTC)."""
    with db.session() as s:
        value = s.scalar(select(DbNow()))
    assert isinstance(value, datetime), value
    return value
