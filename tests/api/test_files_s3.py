"""GET /files/{key} on S3 storage: a 302 to a presigned URL that serves the bytes; 404 and 410
as on local storage. A real S3-protocol server (moto), tests/s3.py."""

from __future__ import annotations

import socket
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.api.test_retention import T0, WEEK, _prediction
from tests.s3 import S3Endpoint
from tests.samples import png_bytes
from wanforge.api.app import create_app
from wanforge.api.retention import RetentionSweeper, SweepReport
from wanforge.config import Settings
from wanforge.media.storage_s3 import S3Storage
from wanforge.store.db import Database

pytestmark = pytest.mark.usefixtures("s3_env")


@pytest.fixture
def s3_settings(settings: Settings, s3_endpoint: S3Endpoint) -> Settings:
    settings.storage_url = f"s3://{s3_endpoint.new_bucket()}/served"
    settings.s3_endpoint_url = s3_endpoint.url
    return settings


def test_upload_then_files_redirects_to_a_presigned_url(
    s3_settings: Settings, db: Database, auth: dict[str, str]
) -> None:
    client = TestClient(create_app(s3_settings, db), follow_redirects=False)
    storage = client.app.state.wanforge.storage  # type: ignore[attr-defined]
    assert isinstance(storage, S3Storage)
    data = png_bytes()
    resp = client.post(
        "/api/v3/media/upload/binary", headers=auth, files={"file": ("cat.png", data, "image/png")}
    )
    assert resp.status_code == 200, resp.text
    url = resp.json()["data"]["download_url"]
    key = url.removeprefix("http://testserver/files/")
    assert storage.read_bytes(key) == data  # it went to the bucket, under the prefix
    assert not (s3_settings.storage_dir / key).exists()

    answer = client.get(f"/files/{key}")
    assert answer.status_code == 302
    assert answer.headers["cache-control"] == "no-store"
    location = answer.headers["location"]
    assert location.startswith(f"{s3_settings.s3_endpoint_url}/{storage.bucket}/served/{key}?")
    fetched = httpx.get(location)
    assert fetched.status_code == 200 and fetched.content == data
    assert fetched.headers["content-type"] == "image/png"
    assert fetched.headers["content-disposition"] == 'inline; filename="cat.png"'


def test_missing_bad_and_expired_keys(s3_settings: Settings, db: Database, owner: str) -> None:
    client = TestClient(create_app(s3_settings, db), follow_redirects=False)
    storage = client.app.state.wanforge.storage  # type: ignore[attr-defined]
    missing = client.get("/files/outputs/abcdefabcdefabcdefabcdef/x.mp4")
    assert missing.status_code == 404 and missing.json()["message"] == "file not found"
    assert client.get("/files/outputs/tok/.hidden").status_code == 404
    # a page or script is never served under its own type, from the bucket either
    key = storage.new_key("outputs", "page.html")
    storage.put_bytes(key, b"<script>")
    location = client.get(f"/files/{key}").headers["location"]
    page = httpx.get(location)
    assert page.headers["content-type"] == "application/octet-stream"
    assert page.headers["content-disposition"] == 'attachment; filename="page.html"'

    _, [output] = _prediction(db, storage, owner, created=T0 - timedelta(hours=1), ended=T0)
    swept_at = T0 + WEEK + timedelta(seconds=1)
    sweeper = RetentionSweeper(db, storage, s3_settings, clock=lambda: swept_at)
    assert sweeper.sweep_once() == SweepReport(predictions=1, files=1)
    assert not storage.exists(output)
    expired = client.get(f"/files/{output}")
    assert expired.status_code == 410
    assert expired.json()["message"].startswith("file expired: outputs are deleted 7 days after")


def test_an_unreachable_store_answers_503(
    settings: Settings, db: Database, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    settings.storage_url = "s3://bucket/p"
    settings.s3_endpoint_url = f"http://127.0.0.1:{port}"
    client = TestClient(create_app(settings, db), follow_redirects=False)
    expected = {"code": 5003, "message": "file storage is unavailable; try again later", "data": None}
    got = client.get("/files/outputs/abcdefabcdefabcdefabcdef/x.mp4")
    assert (got.status_code, got.json()) == (503, expected)
    up = client.post(
        "/api/v3/media/upload/binary", headers=auth, files={"file": ("a.png", b"x", "image/png")}
    )
    assert (up.status_code, up.json()) == (503, expected)
