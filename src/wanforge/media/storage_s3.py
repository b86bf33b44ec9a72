"""Artifact storage in an S3-compatible object store (AWS S3, MinIO, Ceph, R2, moto...).

Chosen library: boto3. It is the mature, maintained S3 client; it presigns GET URLs (how
``/files/{key}`` serves outputs without streaming them through the API), and its transfer manager
(``upload_fileobj`` / ``download_file``) does multipart uploads and parallel ranged downloads for
large files, so nothing of ours re-implements the S3 protocol.

Atomicity matches :class:`~wanforge.media.storage.LocalStorage`: an S3 object appears only once
its PUT (or its multipart upload) completes, so a reader never sees half an object. Streams are
spooled to a local temporary file (in memory up to ``SPOOL_MEMORY_BYTES``) while the size limit
is checked, then uploaded: a 2 GiB upload is never held in memory, and an oversized one is refused
before anything reaches the bucket.

Credentials come from boto3's standard chain (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE``, instance roles...); nothing here reads them.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from wanforge.media.errors import MediaError, MediaNotFound, StorageUnavailable, TooLarge
from wanforge.media.keys import make_key, validate_key

__all__ = ["S3Storage", "parse_s3_url"]

SPOOL_MEMORY_BYTES = 8 * 1024 * 1024
_MISSING = {"404", "NoSuchKey", "NotFound"}
# the store's own trouble, worth trying again later (S3's throttling and 5xx codes)
_UNAVAILABLE = {
    "500",
    "502",
    "503",
    "504",
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "RequestTimeout",
}


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix/")``; the prefix may be empty."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"WANFORGE_STORAGE_URL must look like s3://bucket/prefix, not {url!r}")
    prefix = parts.path.strip("/")
    return parts.netloc, f"{prefix}/" if prefix else ""


class S3Storage:
    """A :class:`~wanforge.media.storage.Storage` in ``bucket`` under ``prefix``.

    ``client`` is a boto3 S3 client; by default one is made from ``endpoint_url`` and ``region``.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region,
                config=Config(signature_version="s3v4", retries={"mode": "standard"}),
            )
        self.client = client

    @classmethod
    def from_url(cls, url: str, *, endpoint_url: str | None = None, region: str | None = None) -> S3Storage:
        bucket, prefix = parse_s3_url(url)
        return cls(bucket, prefix, endpoint_url=endpoint_url, region=region)

    def __repr__(self) -> str:
        return f"S3Storage('s3://{self.bucket}/{self.prefix}')"

    # -- keys -------------------------------------------------------------------------------

    def new_key(self, prefix: str, filename: str) -> str:
        """A fresh key ``<prefix>/<random token>/<sanitised filename>``; nothing is written."""
        return make_key(prefix, filename)

    def _name(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def path(self, key: str) -> Path:
        """S3 objects have no local path: serve them with :meth:`presigned_url`, read them with
        :meth:`read_bytes` or :meth:`copy_to`."""
        validate_key(key)
        raise MediaError("S3 storage has no local file path; use presigned_url, read_bytes or copy_to")

    def presigned_url(
        self,
        key: str,
        expires_s: int,
        *,
        content_type: str | None = None,
        content_disposition: str | None = None,
    ) -> str | None:
        """A GET URL for ``key`` valid ``expires_s`` seconds; the object's response carries the
        given Content-Type and Content-Disposition (S3 overrides them on presigned GETs)."""
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self._name(key)}
        if content_type is not None:
            params["ResponseContentType"] = content_type
        if content_disposition is not None:
            params["ResponseContentDisposition"] = content_disposition
        url: str = self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_s)
        return url

    # -- writing ----------------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` (replacing any previous content)."""
        name = self._name(key)
        self._call(key, self.client.put_object, Bucket=self.bucket, Key=name, Body=data)

    def put_file(self, key: str, src_path: Path) -> None:
        """Upload the file at ``src_path`` under ``key`` (multipart when large)."""
        name = self._name(key)
        try:
            src = open(src_path, "rb")  # noqa: SIM115 - closed by the with below
        except OSError as exc:
            raise MediaError(f"cannot read {Path(src_path).name!r} to store it: {exc.strerror}") from exc
        with src:
            self._call(key, self.client.upload_fileobj, src, self.bucket, name)

    def write_stream(self, key: str, chunks: Iterable[bytes], *, max_bytes: int) -> int:
        """Store an iterable of byte chunks; return the size. Over ``max_bytes`` -> TooLarge,
        and nothing reaches the bucket."""
        name = self._name(key)
        with _spool() as spool:
            total = 0
            for chunk in chunks:
                total += len(chunk)
                if total > max_bytes:
                    raise TooLarge("upload", max_bytes)
                spool.write(chunk)
            spool.seek(0)
            self._call(key, self.client.upload_fileobj, spool, self.bucket, name)
        return total

    async def write_async_stream(self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int) -> int:
        """:meth:`write_stream` for an async iterable; the upload itself runs in a thread."""
        name = self._name(key)
        with _spool() as spool:
            total = 0
            async for chunk in chunks:
                total += len(chunk)
                if total > max_bytes:
                    raise TooLarge("upload", max_bytes)
                spool.write(chunk)
            spool.seek(0)
            await asyncio.to_thread(self._call, key, self.client.upload_fileobj, spool, self.bucket, name)
        return total

    # -- reading and housekeeping -----------------------------------------------------------

    def read_bytes(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """The content of ``key``. Missing -> MediaNotFound; over ``max_bytes`` -> TooLarge."""
        name = self._name(key)
        response = self._call(key, self.client.get_object, Bucket=self.bucket, Key=name)
        body = response["Body"]
        try:
            size = int(response["ContentLength"])
            if max_bytes is not None and size > max_bytes:
                raise TooLarge(f"stored file {key!r}", max_bytes, size)
            data: bytes = body.read()
        finally:
            body.close()
        return data

    def _head(self, key: str) -> dict[str, Any] | None:
        name = self._name(key)
        try:
            head: dict[str, Any] = self._call(key, self.client.head_object, Bucket=self.bucket, Key=name)
        except MediaNotFound:
            return None
        return head

    def exists(self, key: str) -> bool:
        """Whether ``key`` names a stored object."""
        return self._head(key) is not None

    def size(self, key: str) -> int:
        """Size in bytes of ``key``; missing -> MediaNotFound."""
        head = self._head(key)
        if head is None:
            raise MediaNotFound(f"storage key {key!r} does not exist", key)
        return int(head["ContentLength"])

    def modified_at(self, key: str) -> float:
        """When ``key`` was last written (unix seconds); missing -> MediaNotFound."""
        head = self._head(key)
        if head is None:
            raise MediaNotFound(f"storage key {key!r} does not exist", key)
        return float(head["LastModified"].timestamp())

    def copy_to(self, key: str, dest: Path) -> int:
        """Download ``key`` to the local file ``dest``; return its size."""
        name = self._name(key)
        self._call(key, self.client.download_file, self.bucket, name, str(dest))
        return Path(dest).stat().st_size

    def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it existed."""
        if not self.exists(key):
            return False
        self._call(key, self.client.delete_object, Bucket=self.bucket, Key=self._name(key))
        return True

    def list_keys(self, prefix: str) -> Iterator[str]:
        """Every stored key under the folder ``prefix`` (listed a page of 1000 at a time)."""
        folder = self._name(prefix) + "/"
        paginator = self.client.get_paginator("list_objects_v2")
        pages = self._call(prefix, lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=folder)))
        for page in pages:
            for item in page.get("Contents", []):
                yield item["Key"][len(self.prefix) :]

    def sweep_unfinished(self, older_than_s: float, now: float) -> int:
        """Abort multipart uploads under the prefix begun over ``older_than_s`` ago (a writer
        killed mid-upload leaves one; its parts are billed until aborted). Return how many."""
        cutoff = datetime.fromtimestamp(now - older_than_s, UTC)
        aborted = 0
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for upload in page.get("Uploads", []):
                if upload["Initiated"] < cutoff:
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    aborted += 1
        return aborted

    # -- errors -----------------------------------------------------------------------------

    def _call(self, key: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call boto3; a missing object -> MediaNotFound, any other S3 error -> MediaError with
        the S3 error code (never the endpoint or credentials)."""
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "unknown"))
            if code in _MISSING:
                raise MediaNotFound(f"storage key {key!r} does not exist", key) from exc
            if code in _UNAVAILABLE:
                raise StorageUnavailable(
                    f"object storage unavailable for storage key {key!r}: {code}"
                ) from exc
            raise MediaError(f"object storage refused storage key {key!r}: {code}") from exc
        except (BotoCoreError, S3UploadFailedError) as exc:  # unreachable, timed out, upload failed
            raise StorageUnavailable(
                f"object storage unavailable for storage key {key!r}: {type(exc).__name__}"
            ) from exc


def _spool() -> tempfile.SpooledTemporaryFile[bytes]:
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES, prefix="wanforge-s3-")
