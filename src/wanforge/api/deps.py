"""Request dependencies: the app's state, the caller's API key, the base URL clients see."""

from __future__ import annotations

import asyncio
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
from wanforge.store.fairness import QueuePositions
from wanforge.store.polls import PollReader
from wanforge.store.tables import ApiKey


@dataclass
class AppState:
    settings: Settings
    db: Database
    storage: Storage
    polls: PollReader  # result polls' reads, batched; it remembers each prompt read
    queue: QueuePositions  # queued predictions' positions, from a shared snapshot of the queue
    clock: Callable[[], datetime] = field(default=utcnow)  # naive UTC; tests set their own


# async on purpose: FastAPI runs a plain `def` dependency in a worker thread, a hop per
# dependency per request; these only read what the request already holds


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.wanforge
    return state


async def get_state(request: Request) -> AppState:
    return app_state(request)


async def base_url(request: Request) -> str:
    return (app_state(request).settings.public_url or str(request.base_url)).rstrip("/")


async def require_key(request: Request) -> ApiKey:
    """The caller's key: checked by `ApiGuard` before the body was read, or checked here."""
    key = getattr(request.state, "api_key", None)
    if isinstance(key, ApiKey):
        return key
    header = request.headers.get("authorization")
    problem, row = await asyncio.to_thread(key_problem, header, app_state(request).db)
    if row is None:
        raise ApiError(401, problem)
    return row


StateDep = Annotated[AppState, Depends(get_state)]
KeyDep = Annotated[ApiKey, Depends(require_key)]
BaseUrlDep = Annotated[str, Depends(base_url)]
