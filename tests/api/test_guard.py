"""The guard in front of the API: the key before any body, and capped bodies."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.api import asgi
from wanforge.api.app import create_app
from wanforge.config import Settings
from wanforge.store.db import Database

I2V = "/api/v3/alibaba/wan-2.2/i2v-plus-480p"


@pytest.fixture
def small(settings: Settings, db: Database) -> TestClient:
    settings.max_download_bytes = 3000  # JSON cap: 4000 + 64 KiB
    settings.max_upload_bytes = 10_000  # multipart cap: + 1 MiB of form overhead
    return TestClient(create_app(settings, db))


def test_no_key_is_refused_before_the_body_is_read(client: TestClient) -> None:
    resp = client.post(I2V, content=b"{definitely not json", headers={"Content-Type": "application/json"})
    assert resp.status_code == 401 and resp.json()["code"] == 401
    resp = client.post("/api/v3/media/upload/binary", files={"file": ("a.bin", b"x" * 100_000)})
    assert resp.status_code == 401


def test_json_body_over_the_cap(small: TestClient, auth: dict[str, str]) -> None:
    huge = {"image": "data:image/png;base64," + "A" * 200_000, "prompt": "x"}
    resp = small.post(I2V, headers=auth, json=huge)
    assert resp.status_code == 413 and resp.json()["code"] == 1401 and "limit" in resp.json()["message"]


def test_streamed_body_without_length_is_capped(small: TestClient, auth: dict[str, str]) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(200):
            yield b"x" * 1024

    resp = small.post(I2V, headers={**auth, "Content-Type": "application/json"}, content=chunks())
    assert resp.status_code == 413 and resp.json()["code"] == 1401


def test_binary_upload_over_the_cap(small: TestClient, auth: dict[str, str]) -> None:
    resp = small.post(
        "/api/v3/media/upload/binary", headers=auth, files={"file": ("a.bin", b"x" * 2_000_000)}
    )
    assert resp.status_code == 413 and resp.json()["code"] == 1401
    ok = small.post("/api/v3/media/upload/binary", headers=auth, files={"file": ("a.bin", b"x" * 5_000)})
    assert ok.status_code == 200 and ok.json()["data"]["size"] == 5_000


def test_health_and_files_need_no_key(client: TestClient) -> None:
    assert client.get("/health").status_code == 200
    assert client.get("/files/uploads/none/x.png").status_code == 404  # not 401


def _multipart_chunks(total: int, chunk: int = 64 * 1024) -> list[bytes]:
    head = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
    )
    return [head] + [b"x" * chunk] * (total // chunk) + [b"\r\n--b--\r\n"]


def test_chunked_upload_is_refused_as_it_streams(small: TestClient, api_key: str) -> None:
    """No Content-Length: the guard counts the bytes and answers 413 once past the limit."""
    limit = 10_000 + 1024 * 1024  # max_upload_bytes + room for the form's own bytes
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "multipart/form-data; boundary=b"}
    answer = asgi.call(
        small.app, "POST", "/api/v3/media/upload/binary", headers=headers, chunks=_multipart_chunks(8 << 20)
    )
    assert answer.status == 413 and answer.json()["code"] == 1401, answer.body
    assert answer.json()["message"] == f"request body is over the limit of {limit} bytes"
    assert limit < answer.pulled <= limit + 64 * 1024  # stopped within one chunk of the limit
    assert answer.headers["connection"] == "close"  # the server reads no more of it: it hangs up
    files = small.app.state.wanforge.storage.root  # type: ignore[attr-defined]
    assert not files.exists() or not any(p.is_file() for p in files.rglob("*"))


def test_chunked_upload_under_the_limit_is_kept(small: TestClient, api_key: str) -> None:
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "multipart/form-data; boundary=b"}
    answer = asgi.call(
        small.app,
        "POST",
        "/api/v3/media/upload/binary",
        headers=headers,
        chunks=_multipart_chunks(8192, chunk=4096),
    )
    assert answer.status == 200 and answer.json()["data"]["size"] == 8192, answer.body


def test_key_use_is_recorded_at_most_once_a_minute(client: TestClient, db: Database, api_key: str) -> None:
    from datetime import datetime, timedelta

    from wanforge.store.keys import hash_key, list_keys, verify_key

    def last_used() -> datetime | None:
        (row,) = [k for k in list_keys(db) if k.key_hash == hash_key(api_key)]
        return row.last_used_at

    assert last_used() is None
    resp = client.get("/api/v3/webhook/secret", headers={"Authorization": f"Bearer {api_key}"})
    assert resp.status_code == 200 and last_used() is not None
    t0 = datetime(2030, 1, 1, 12, 0, 0)
    assert verify_key(db, api_key, now=t0) is not None and last_used() == t0
    assert verify_key(db, api_key, now=t0 + timedelta(seconds=59)) is not None
    assert last_used() == t0  # throttled: no write within the minute
    assert verify_key(db, api_key, now=t0 + timedelta(seconds=60)) is not None
    assert last_used() == t0 + timedelta(seconds=60)
