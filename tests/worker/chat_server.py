"""A local HTTP server that speaks OpenAI chat completions: it records each request and answers
from a script (status, body, or hang until the test ends), then with `EXPANDED` by default."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

EXPANDED = "A slow dolly-in on the cat as it turns its head toward warm window light; soft shadows drift."


def completion(content: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "m",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            ],
        }
    ).encode()


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # never answer (until the server closes)


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    json: Any


@dataclass
class ChatServer:
    base_url: str  # up to /v1
    replies: list[Reply]
    requests: list[Request] = field(default_factory=list)
    closing: threading.Event = field(default_factory=threading.Event)


@contextmanager
def chat_server(*replies: Reply) -> Iterator[ChatServer]:
    server_state = ChatServer(base_url="", replies=list(replies))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", "0")))
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            headers = {k.lower(): v for k, v in self.headers.items()}
            server_state.requests.append(Request(self.path, headers, body))
            reply = server_state.replies.pop(0) if server_state.replies else Reply(body=completion(EXPANDED))
            if reply.hang:
                server_state.closing.wait()
                return
            self.send_response(reply.status)
            for name, value in {"content-type": "application/json", **reply.headers}.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server_state.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        server_state.closing.set()
        server.shutdown()
        server.server_close()
