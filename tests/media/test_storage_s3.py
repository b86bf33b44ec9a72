"""S3Storage against a real S3-protocol server (moto): the Storage contract LocalStorage keeps."""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.media.test_storage import BAD_KEYS
from tests.s3 import S3Endpoint
from wanforge.config import Settings
from wanforge.media.errors import MediaError, MediaNotFound, StorageUnavailable, TooLarge
from wanforge.media.factory import make_storage
from wanforge.media.storage import LocalStorage, Storage
from wanforge.media.storage_s3 import S3Storage, parse_s3_url
from wanforge.worker.scrub import is_storage_error

pytestmark = pytest.mark.usefixtures("s3_env")


@pytest.fixture
def s3(s3_endpoint: S3Endpoint) -> S3Storage:
    return S3Storage(s3_endpoint.new_bucket(), "team/a", endpoint_url=s3_endpoint.url, region="us-east-1")


def _objects(s3: S3Storage) -> list[str]:
    listed = s3.client.list_objects_v2(Bucket=s3.bucket)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def test_s3_storage_is_a_storage(s3: S3Storage) -> None:
    assert isinstance(s3, Storage)


def test_parse_s3_url() -> None:
    assert parse_s3_url("s3://bucket") == ("bucket", "")
    assert parse_s3_url("s3://bucket/a/b/") == ("bucket", "a/b/")
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        parse_s3_url("https://bucket/a")


def test_round_trip_under_the_prefix(s3: S3Storage, tmp_path: Path) -> None:
    key = s3.new_key("outputs", "clip.mp4")
    assert not s3.exists(key)
    s3.put_bytes(key, b"video bytes")
    assert s3.exists(key) and s3.size(key) == 11
    assert abs(s3.modified_at(key) - time.time()) < 60  # for the sweep of unrecorded outputs
    assert s3.read_bytes(key) == b"video bytes"
    assert _objects(s3) == [f"team/a/{key}"]
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 3000)
    other = s3.new_key("uploads", "src.bin")
    s3.put_file(other, src)
    dest = tmp_path / "copy.bin"
    assert s3.copy_to(other, dest) == 3000 and dest.read_bytes() == b"x" * 3000


def test_missing_keys(s3: S3Storage, tmp_path: Path) -> None:
    key = "outputs/nosuchtoken/a.mp4"
    for call in (
        lambda: s3.read_bytes(key),
        lambda: s3.size(key),
        lambda: s3.copy_to(key, tmp_path / "d"),
    ):
        with pytest.raises(MediaNotFound) as caught:
            call()
        assert caught.value.key == key
        assert str(caught.value) == "storage key 'outputs/nosuchtoken/a.mp4' does not exist"
    assert s3.exists(key) is False
    assert s3.delete(key) is False


def test_read_limit(s3: S3Storage) -> None:
    key = s3.new_key("uploads", "a.bin")
    s3.put_bytes(key, b"0123456789")
    with pytest.raises(TooLarge, match="is 10 bytes, over the limit of 4 bytes"):
        s3.read_bytes(key, max_bytes=4)
    assert s3.read_bytes(key, max_bytes=10) == b"0123456789"


def test_stream_limit_keeps_nothing(s3: S3Storage) -> None:
    key = s3.new_key("uploads", "big.bin")
    assert s3.write_stream(key, [b"abc", b"def"], max_bytes=6) == 6
    assert s3.read_bytes(key) == b"abcdef"
    over = s3.new_key("uploads", "over.bin")
    with pytest.raises(TooLarge, match="upload is larger than the limit of 5 bytes"):
        s3.write_stream(over, [b"abc", b"def"], max_bytes=5)
    assert not s3.exists(over)

    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"ab", b"cd", b"ef"):
            yield part

    assert asyncio.run(s3.write_async_stream(over, chunks(), max_bytes=6)) == 6
    assert s3.read_bytes(over) == b"abcdef"
    late = s3.new_key("uploads", "late.bin")
    with pytest.raises(TooLarge):
        asyncio.run(s3.write_async_stream(late, chunks(), max_bytes=5))
    assert not s3.exists(late)


def test_large_stream_goes_up_in_parts(s3: S3Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over the spool's memory size the stream lies on disk, and boto3 uploads it in parts."""
    import wanforge.media.storage_s3 as module

    monkeypatch.setattr(module, "SPOOL_MEMORY_BYTES", 1024)
    key = s3.new_key("outputs", "big.bin")
    chunk = bytes(range(256)) * 4096  # 1 MiB
    assert s3.write_stream(key, [chunk] * 9, max_bytes=9 * len(chunk)) == 9 * len(chunk)
    assert s3.read_bytes(key) == chunk * 9
    # a multipart object's ETag ends in -<parts>; boto3's threshold is 8 MiB
    assert s3.client.head_object(Bucket=s3.bucket, Key=s3.prefix + key)["ETag"].endswith('-2"')


def test_delete(s3: S3Storage) -> None:
    key = s3.new_key("outputs", "a.png")
    s3.put_bytes(key, b"png")
    assert s3.delete(key) is True
    assert not s3.exists(key) and _objects(s3) == []
    assert s3.delete(key) is False


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_refused(s3: S3Storage, key: str, tmp_path: Path) -> None:
    for call in (
        lambda: s3.put_bytes(key, b"x"),
        lambda: s3.read_bytes(key),
        lambda: s3.exists(key),
        lambda: s3.delete(key),
        lambda: s3.copy_to(key, tmp_path / "d"),
        lambda: s3.presigned_url(key, 60),
        lambda: s3.path(key),
    ):
        with pytest.raises(MediaError):
            call()
    assert _objects(s3) == []


def test_path_is_refused_with_a_reason(s3: S3Storage) -> None:
    with pytest.raises(MediaError, match="S3 storage has no local file path; use presigned_url"):
        s3.path("outputs/tok/a.mp4")


def test_presigned_url_serves_the_bytes_with_the_given_type(s3: S3Storage) -> None:
    key = s3.new_key("outputs", "clip.mp4")
    s3.put_bytes(key, b"mp4 bytes")
    url = s3.presigned_url(
        key, 60, content_type="video/mp4", content_disposition='inline; filename="clip.mp4"'
    )
    assert url is not None
    got = httpx.get(url)
    assert got.status_code == 200 and got.content == b"mp4 bytes"
    assert got.headers["content-type"] == "video/mp4"
    assert got.headers["content-disposition"] == 'inline; filename="clip.mp4"'


def test_local_storage_has_no_presigned_url(tmp_path: Path) -> None:
    assert LocalStorage(tmp_path).presigned_url("outputs/tok/a.mp4", 60) is None


def test_sweep_aborts_stale_multipart_uploads(s3: S3Storage) -> None:
    stale = s3.client.create_multipart_upload(Bucket=s3.bucket, Key=s3.prefix + "outputs/t/a.mp4")
    other = s3.client.create_multipart_upload(Bucket=s3.bucket, Key="elsewhere/b.mp4")
    # the age is measured from the server's `Initiated` (moto reports a fixed one, so read it)
    uploads = s3.client.list_multipart_uploads(Bucket=s3.bucket)["Uploads"]
    begun = next(u["Initiated"] for u in uploads if u["UploadId"] == stale["UploadId"]).timestamp()
    assert s3.sweep_unfinished(3600, begun + 3599) == 0
    assert s3.sweep_unfinished(3600, begun + 3601) == 1
    left = s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])
    assert [u["UploadId"] for u in left] == [other["UploadId"]]
    assert stale["UploadId"] != other["UploadId"]


def test_make_storage(tmp_path: Path, s3_endpoint: S3Endpoint) -> None:
    local = make_storage(Settings(data_dir=tmp_path))
    assert isinstance(local, LocalStorage) and local.root == tmp_path / "files"
    remote = make_storage(
        Settings(data_dir=tmp_path, storage_url="s3://bkt/p/q", s3_endpoint_url=s3_endpoint.url)
    )
    assert isinstance(remote, S3Storage)
    assert (remote.bucket, remote.prefix) == ("bkt", "p/q/")
    with pytest.raises(ValueError, match="WANFORGE_STORAGE_URL must be unset"):
        Settings(storage_url="/srv/files")


def test_an_unreachable_store_is_a_storage_error_the_worker_retries(tmp_path: Path) -> None:
    """Connection refused: StorageUnavailable, an OSError(EIO) the worker puts the job back for."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2),
    )
    dead = S3Storage("bucket", "p", client=client)
    with pytest.raises(StorageUnavailable) as caught:
        dead.put_bytes("outputs/tok/a.mp4", b"x")
    assert (
        str(caught.value)
        == "object storage unavailable for storage key 'outputs/tok/a.mp4': EndpointConnectionError"
    )
    assert "127.0.0.1" not in str(caught.value)
    assert is_storage_error(caught.value) and caught.value.errno == errno.EIO
    with pytest.raises(StorageUnavailable):
        dead.copy_to("outputs/tok/a.mp4", tmp_path / "d")
