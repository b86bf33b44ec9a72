"""Request dependencies: the app's state, the caller's API key, the base URL clients see."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request

from wanforge.api.errors import ApiError
from wanforge.api.guard import key_problem
from wanforge.config import Settings
from wanforge.media.storage import Storage
from wanforge.store.db import Database, utcnow
from wanforge.store.tables import ApiKey


@dataclass
class AppState:
    settings: Settings
    db: Database
    storage: Storage
    clock: Callable[[], datetime] = field(default=utcnow)  # naive UTC; tests set their own


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.wanforge
    return state


def base_url(request: Request) -> str:
    state = get_state(request)
    return (state.settings.public_url or str(request.base_url)).rstrip("/")


def require_key(request: Request) -> ApiKey:
    """The caller's key: checked by `ApiGuard` before the body was read, or checked here."""
    key = getattr(request.state, "api_key", None)
    if isinstance(key, ApiKey):
        return key
    problem, row = key_problem(request.headers.get("authorization"), get_state(request).db)
    if row is None:
        raise ApiError(401, problem)
    return row


StateDep = Annotated[AppState, Depends(get_state)]
KeyDep = Annotated[ApiKey, Depends(require_key)]
BaseUrlDep = Annotated[str, Depends(base_url)]
