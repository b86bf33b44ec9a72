"""Secrets the server makes for itself, stored by name and made once, on first use."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.exc import IntegrityError

from wanforge.store.db import Database, utcnow
from wanforge.store.tables import ServerSecret


def server_secret(db: Database, name: str, make: Callable[[], str]) -> str:
    """The secret stored under `name`; if there is none yet, `make()` one and store it.

    Several processes may race to make it: the first insert wins and everyone returns that one.
    """
    with db.session() as s:
        row = s.get(ServerSecret, name)
        if row is not None:
            return row.value
    try:
        with db.session() as s:
            s.add(ServerSecret(name=name, value=make(), created_at=utcnow()))
    except IntegrityError:  # another process made it first: use theirs
        pass
    with db.session() as s:
        row = s.get(ServerSecret, name)
        assert row is not None
        return row.value
