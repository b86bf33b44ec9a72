"""Drive the app as a raw ASGI call: the test decides each body chunk and when the client leaves,
and sees how many body bytes the app pulled (TestClient hands over the whole body at once)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message


async def never() -> Message:
    """A client that stays connected."""
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def gone() -> Message:
    """A client that has disconnected."""
    return {"type": "http.disconnect"}


@dataclass
class Hold:
    """Put among a request's chunks: the body stops there (`reached` is set) until `release`."""

    reached: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    pulled: int  # body bytes the app received

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    app: ASGIApp,
    method: str,
    path: str,
    *,
    headers: dict[str, str],
    chunks: Iterable[bytes | Hold] = (),
    after_body: Callable[[], Awaitable[Message]] = gone,
) -> Answer:
    """One request whose body is `chunks` (sent as they are, like a chunked upload)."""

    async def run() -> Answer:
        # a safety net against a hang, not a timing assertion
        return await asyncio.wait_for(
            acall(app, method, path, headers=headers, chunks=chunks, after_body=after_body), timeout=60
        )

    return asyncio.run(run())


async def acall(
    app: ASGIApp,
    method: str,
    path: str,
    *,
    headers: dict[str, str],
    chunks: Iterable[bytes | Hold] = (),
    after_body: Callable[[], Awaitable[Message]] = gone,
) -> Answer:
    """:func:`call` in a running loop."""
    pending = list(chunks) or [b""]
    pulled = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal pulled
        while pending and isinstance(pending[0], Hold):
            hold = pending.pop(0)
            assert isinstance(hold, Hold)
            hold.reached.set()
            await hold.release.wait()
        if pending:
            body = pending.pop(0)
            assert isinstance(body, bytes)
            pulled += len(body)
            return {"type": "http.request", "body": body, "more_body": bool(pending)}
        return await after_body()

    async def send(message: Message) -> None:
        sent.append(message)

    path_only, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path_only,
        "raw_path": path_only.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"testserver")]
        + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return Answer(
        status=start["status"],
        headers={k.decode(): v.decode() for k, v in start.get("headers", [])},
        body=b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"),
        pulled=pulled,
    )
