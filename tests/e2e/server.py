"""A real `wanforge serve` process (API + supervised worker process) for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

API_KEY = "wf_test_" + "k" * 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    base_url: str
    api_key: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    database_url: str = ""
    _admin_key: str | None = field(default=None, repr=False)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=self.headers, timeout=30)

    def upload(self, path: Path) -> str:
        """Upload a file (multipart) and return its download_url."""
        with self.client() as c:
            resp = c.post("/api/v3/media/upload/binary", files={"file": (path.name, path.read_bytes())})
        assert resp.status_code == 200, resp.text
        return str(resp.json()["data"]["download_url"])

    def health(self) -> dict[str, Any]:
        """/health as an admin key sees it (with the workers' pids and current jobs)."""
        return dict(httpx.get(f"{self.base_url}/health", headers=self.admin_headers(), timeout=10).json())

    def admin_headers(self) -> dict[str, str]:
        """An admin key, made in the store on first use (migrating it, as the server may not have yet)."""
        if self._admin_key is None:
            from wanforge.store.db import Database
            from wanforge.store.keys import KeyOptions, create_key
            from wanforge.store.migrate import upgrade

            upgrade(self.database_url)
            db = Database(self.database_url)
            try:
                self._admin_key = create_key(db, "e2e admin", KeyOptions(is_admin=True))[0]
            finally:
                db.dispose()
        return {"Authorization": f"Bearer {self._admin_key}"}

    def wait_up(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                self.health()
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise TimeoutError(f"server not up in {timeout_s}s:\n{self.log()}")

    def wait_ready(self, timeout_s: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                body = self.health()
                if body.get("worker") == "ready":
                    return body
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready in {timeout_s}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-8000:]

    def wait_for(self, prediction_id: str, timeout_s: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        with self.client() as c:
            while time.monotonic() < deadline:
                data = c.get(f"/api/v3/predictions/{prediction_id}/result").json()["data"]
                if data["status"] in ("completed", "failed", "cancelled"):
                    return dict(data)
                time.sleep(0.2)
        raise TimeoutError(f"prediction {prediction_id} not finished in {timeout_s}s:\n{self.log()}")


@contextmanager
def running_server(tmp: Path, *args: str, wait_ready: bool = True, **env: str) -> Iterator[Server]:
    port = free_port()
    data_dir = tmp / "data"
    log_path = tmp / f"server-{port}.log"
    full_env = {
        **os.environ,
        "WANFORGE_API_KEY": API_KEY,
        "WANFORGE_ALLOW_PRIVATE_URLS": "1",
        "WANFORGE_LEASE_S": "3",
        "WANFORGE_POLL_INTERVAL_S": "0.1",
        **env,
    }
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "wanforge",
                "serve",
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
                *args,
            ],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    database_url = (
        full_env.get("WANFORGE_DATABASE_URL") or f"sqlite:///{(data_dir / 'wanforge.db').resolve()}"
    )
    server = Server(f"http://127.0.0.1:{port}", API_KEY, data_dir, proc, log_path, database_url)
    try:
        if wait_ready:
            server.wait_ready()
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
