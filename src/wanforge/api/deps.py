"""Request dependencies: the app's state, the caller's API key, the base URL clients see."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from wanforge.api.errors import ApiError
from wanforge.config import Settings
from wanforge.media.storage import LocalStorage
from wanforge.store.db import Database
from wanforge.store.keys import verify_key
from wanforge.store.tables import ApiKey


@dataclass
class AppState:
    settings: Settings
    db: Database
    storage: LocalStorage


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.wanforge
    return state


def base_url(request: Request) -> str:
    state = get_state(request)
    return (state.settings.public_url or str(request.base_url)).rstrip("/")


def require_key(request: Request) -> ApiKey:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise ApiError(401, "missing API key: send the header 'Authorization: Bearer <key>'")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "malformed Authorization header: expected 'Bearer <key>'")
    row = verify_key(get_state(request).db, token.strip())
    if row is None:
        raise ApiError(401, "invalid API key")
    return row


StateDep = Annotated[AppState, Depends(get_state)]
KeyDep = Annotated[ApiKey, Depends(require_key)]
BaseUrlDep = Annotated[str, Depends(base_url)]
