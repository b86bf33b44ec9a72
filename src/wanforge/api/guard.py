"""An ASGI guard in front of the API: the key is checked before any body is read, and bodies
are capped while they stream in.

FastAPI parses a request body before it resolves dependencies, so without this an
unauthenticated client could make the server spool a multipart upload of any size to disk (or a
JSON body to memory) only to be told 401 afterwards.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wanforge.api.errors import STORE_RETRY_AFTER_S, STORE_UNAVAILABLE_MESSAGE, envelope
from wanforge.api.keycache import KeyCache
from wanforge.store.db import STORE_UNAVAILABLE_ERRORS, Database
from wanforge.store.keys import verify_key
from wanforge.store.tables import ApiKey
from wanforge.vocabulary import ErrorCode

API_PREFIX = "/api/v3/"
TICKET_PUT_PREFIX = "/api/v3/media/uploads/"  # authorised by the ticket's token, not the key
BINARY_UPLOAD = "/api/v3/media/upload/binary"


class BodyTooLarge(Exception):
    pass


INVALID_KEY = "invalid API key"


def bearer_token(header: str | None) -> tuple[str, str]:
    """("", token) from an `Authorization: Bearer <key>` header, else (message, "")."""
    if not header:
        return "missing API key: send the header 'Authorization: Bearer <key>'", ""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return "malformed Authorization header: expected 'Bearer <key>'", ""
    return "", token.strip()


def key_problem(header: str | None, db: Database) -> tuple[str, ApiKey | None]:
    """("", key) when the header carries a valid key, else (message, None)."""
    problem, token = bearer_token(header)
    if problem:
        return problem, None
    row = verify_key(db, token)
    return ("", row) if row is not None else (INVALID_KEY, None)


class ApiGuard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        db: Callable[[], Database],
        max_json_bytes: int,
        max_upload_bytes: int,
        keys: KeyCache | None = None,
    ):
        self.app = app
        self.db = db
        self.keys = keys
        self.max_json_bytes = max_json_bytes
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        ticket_put = scope.get("method") == "PUT" and path.startswith(TICKET_PUT_PREFIX)
        if not ticket_put:
            try:
                problem, key = await self._key(headers.get("authorization"))
            except STORE_UNAVAILABLE_ERRORS:  # the key cannot be checked right now: worth a retry
                await _answer(
                    send,
                    503,
                    ErrorCode.UNAVAILABLE,
                    STORE_UNAVAILABLE_MESSAGE,
                    {"retry-after": str(STORE_RETRY_AFTER_S)},
                )
                return
            if key is None:
                await _answer(send, 401, 401, problem)
                return
            scope.setdefault("state", {})["api_key"] = key
            # ticket PUTs are capped by their route as they stream, against the size the ticket
            # declared; binary uploads here, by Content-Length and as they stream
            limit = self.max_upload_bytes + 1024 * 1024 if path == BINARY_UPLOAD else self.max_json_bytes
            declared = headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                await _answer(
                    send, 413, ErrorCode.INVALID_PARAMETER, f"request body is over the limit of {limit} bytes"
                )
                return
            if path == BINARY_UPLOAD:  # streamed: counted as it arrives, refused past the limit
                await _capped(self.app, scope, receive, send, limit)
                return
            try:  # JSON: read it here, capped (the route holds it in memory anyway)
                receive = await _buffered(receive, limit)
            except BodyTooLarge as exc:
                await _answer(send, 413, ErrorCode.INVALID_PARAMETER, str(exc))
                return
        await self.app(scope, receive, send)

    async def _key(self, header: str | None) -> tuple[str, ApiKey | None]:
        """The caller's key: from the cache without leaving the event loop, else from the store
        (in a thread: it blocks)."""
        problem, token = bearer_token(header)
        if problem:
            return problem, None
        key = self.keys.get(token) if self.keys is not None else None
        if key is None:
            key = await asyncio.to_thread(verify_key, self.db(), token)
            if key is not None and self.keys is not None:
                self.keys.put(token, key)
        return ("", key) if key is not None else (INVALID_KEY, None)


async def _capped(app: ASGIApp, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    """Run `app` on a body of at most `limit` bytes, counted as it streams in.

    The first chunk past the limit is not handed over: the 413 goes out at once and the app's
    read fails, so a chunked body (no Content-Length) is never spooled past the limit. Whatever
    the app answers after that (FastAPI turns a failed form read into a 400) is dropped.
    Starlette's RequestBodyLimitMiddleware does the same, but answers in plain text.
    """
    size = 0
    refused = started = False

    async def counting_receive() -> Message:
        nonlocal size, refused
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                if not started:
                    refused = True
                    await _answer(
                        send,
                        413,
                        ErrorCode.INVALID_PARAMETER,
                        f"request body is over the limit of {limit} bytes",
                    )
                raise BodyTooLarge(f"request body is over the limit of {limit} bytes")
        return message

    async def guarded_send(message: Message) -> None:
        nonlocal started
        if refused:
            return
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await app(scope, counting_receive, guarded_send)
    except BodyTooLarge:
        if not refused:
            raise


async def _buffered(receive: Receive, limit: int) -> Receive:
    """Read the whole body (refusing more than `limit` bytes) and replay it to the app."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return _replay([message], receive)
        size += len(message.get("body", b""))
        if size > limit:
            raise BodyTooLarge(f"request body is over the limit of {limit} bytes")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return _replay([{"type": "http.request", "body": b"".join(chunks), "more_body": False}], receive)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay


# with a 413 the server hangs up rather than read (and throw away) the rest of the body: uvicorn
# closes a connection whose response says so (both its h11 and httptools protocols)
CLOSE = (b"connection", b"close")


async def _answer(
    send: Send, status: int, code: int, message: str, extra_headers: dict[str, str] | None = None
) -> None:
    body = json.dumps(envelope(None, code=code, message=message)).encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.encode("latin-1"), v.encode("latin-1")) for k, v in (extra_headers or {}).items()),
        *([CLOSE] if status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE else []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
