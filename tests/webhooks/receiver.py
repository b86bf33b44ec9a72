"""A local HTTP server that records webhook POSTs (and can fail the first ones, or hang), and
finished predictions that owe it one."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from wanforge.store import jobs
from wanforge.store.db import Database


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    statuses: list[int] = field(default_factory=list)  # answers to give, in order; then 200
    received: list[Received] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)
    hold: threading.Event | None = None  # when given: answer only once it is set
    holding: threading.Event = field(default_factory=threading.Event)  # set while a POST waits on hold


@contextmanager
def webhook_receiver(
    statuses: list[int] | None = None, hold: threading.Event | None = None
) -> Iterator[Receiver]:
    receiver = Receiver(url="", statuses=list(statuses or []), hold=hold)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if receiver.hold is not None:
                receiver.holding.set()
                receiver.hold.wait()
            receiver.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
            status = receiver.statuses.pop(0) if receiver.statuses else 200
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()
            if status == 200:
                receiver.arrived.set()

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    # a short poll interval: shutdown() waits up to one interval
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        if hold is not None:
            hold.set()  # release a hanging handler so the server can close
        server.shutdown()
        server.server_close()


def finished(db: Database, url: str | None, owner: str | None = None) -> str:
    """A completed prediction of the key `owner` whose webhook (if `url`) is due now."""
    row = jobs.create_prediction(
        db,
        model="m",
        kind="generate",
        input={},
        server_base="http://api.example",
        max_attempts=3,
        webhook_url=url,
        api_key_id=owner,
    )
    assert jobs.claim_next(db, "w", 30, ("generate",)) is not None
    assert jobs.complete(db, row.id, "w", outputs=["outputs/t/v.mp4"], result={"seed": 4}, inference_ms=12)
    return row.id
