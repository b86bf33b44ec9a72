"""A real S3-protocol endpoint for tests: moto's standalone server on 127.0.0.1, a free port.

boto3 and moto[server] are dev dependencies; without them these tests skip locally and fail in
CI (where `CI` is set), as the browser tests do for chromium."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def need(module: str) -> None:
    """Skip (locally) or fail (in CI) when ``module`` cannot be imported."""
    try:
        __import__(module)
    except ImportError:
        message = f"{module} is not installed: pip install -e '.[dev]'"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@dataclass(frozen=True)
class S3Endpoint:
    url: str

    def client(self) -> Any:
        """A boto3 S3 client of this endpoint (boto3 is untyped)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def new_bucket(self) -> str:
        name = f"wanforge-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_moto(deadline_s: float = 30.0) -> Iterator[S3Endpoint]:
    """Run ``python -m moto.server`` until the generator is closed."""
    need("boto3")
    need("moto.server")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        give_up = time.monotonic() + deadline_s
        while True:
            try:
                httpx.get(f"{url}/moto-api/", timeout=1.0)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > give_up:
                    pytest.fail(f"moto server did not start on {url} (exit {proc.poll()})")
                time.sleep(0.1)  # waiting for a real process to listen: no clock to inject
        yield S3Endpoint(url)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
