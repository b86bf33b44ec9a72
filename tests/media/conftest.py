"""A real HTTP server on 127.0.0.1 (random port) whose paths play every case fetch must handle."""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

BODY = b"hello from the test server"


@dataclass
class LocalServer:
    base: str
    port: int
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, Host header)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parts.query))
        self.server.record.requests.append((parts.path, self.headers.get("Host", "")))
        path = parts.path
        if path == "/ok":
            self._send(200, BODY, {"Content-Type": "Image/PNG; charset=binary"})
        elif path == "/echo-host":
            self._send(200, self.headers.get("Host", "").encode())
        elif path == "/sized":
            self._send(200, b"x" * int(query["n"]))
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(int(query["chunks"])):
                self.wfile.write(b"3e8\r\n" + b"y" * 1000 + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/close-delimited":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"z" * int(query["n"]))
            self.close_connection = True
        elif path == "/huge-length":  # declares a terabyte and sends nothing: must fail at once
            self.send_response(200)
            self.send_header("Content-Length", str(10**12))
            self.end_headers()
            self.close_connection = True
        elif path == "/slow":
            time.sleep(float(query.get("s", "2")))
            self._send(200, BODY)
        elif path == "/drip":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b".")
                self.wfile.flush()
                time.sleep(0.05)
        elif path.startswith("/status/"):
            self._send(int(path.rsplit("/", 1)[1]), b"nope")
        elif path == "/redirect":
            self._send(int(query.get("code", "302")), b"", {"Location": query["to"]})
        elif path == "/loop":
            self._send(302, b"", {"Location": "/loop"})
        elif path == "/no-location":
            self._send(302, b"")
        else:
            self._send(404, b"no such path")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    record: LocalServer

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients hang up on purpose (size caps, timeouts)


@pytest.fixture(scope="module")
def http_server() -> Iterator[LocalServer]:
    server = _Server(("127.0.0.1", 0), _Handler)
    port = server.server_address[1]
    server.record = LocalServer(base=f"http://127.0.0.1:{port}", port=port)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.record
    server.shutdown()
    server.server_close()
