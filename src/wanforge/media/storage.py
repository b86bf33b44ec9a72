"""Artifact storage: uploads and outputs under safe, unguessable keys.

:class:`Storage` is the interface the API and the workers use; :class:`LocalStorage` keeps the
artifacts in a local (or shared, network-mounted) directory. Every write is atomic: bytes go to
a hidden temporary file next to the target and are renamed into place only once complete, so a
reader never sees half a file and a crash leaves no truncated artifact behind. Temporary names
start with ``.``, which no valid key can address (see :mod:`wanforge.media.keys`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from wanforge.media.atomic import AtomicFile, atomic_write, sweep_unfinished
from wanforge.media.errors import MediaError, MediaNotFound, TooLarge
from wanforge.media.keys import make_key, validate_key

__all__ = ["LocalStorage", "Storage"]


@runtime_checkable
class Storage(Protocol):
    """Where artifacts live; the API and the workers hold one of these and nothing more specific.

    Keys are validated by every method; a bad key raises MediaError. A missing key raises
    MediaNotFound. Only the file server needs a local file (:meth:`path`, served with sendfile),
    and only when :meth:`presigned_url` gives None; everything else reads and writes through the
    methods below. :class:`~wanforge.media.storage_s3.S3Storage` is the object-store one.
    """

    def new_key(self, prefix: str, filename: str) -> str: ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def put_file(self, key: str, src_path: Path) -> None: ...

    def write_stream(self, key: str, chunks: Iterable[bytes], *, max_bytes: int) -> int: ...

    async def write_async_stream(self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int) -> int: ...

    def read_bytes(self, key: str, *, max_bytes: int | None = None) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int: ...

    def modified_at(self, key: str) -> float:
        """When ``key`` was last written (unix seconds); missing -> MediaNotFound."""
        ...

    def delete(self, key: str) -> bool: ...

    def copy_to(self, key: str, dest: Path) -> int: ...

    def path(self, key: str) -> Path: ...

    def sweep_unfinished(self, older_than_s: float, now: float) -> int: ...

    def list_keys(self, prefix: str) -> Iterator[str]:
        """Every stored key under the folder ``prefix`` (a valid key), in no particular order;
        unfinished writes are not keys. For housekeeping (the sweep of jobs' scratch)."""
        ...

    def presigned_url(
        self,
        key: str,
        expires_s: int,
        *,
        content_type: str | None = None,
        content_disposition: str | None = None,
    ) -> str | None:
        """A URL a client can GET the object from directly, or None when the storage has none
        (the API then serves the file from :meth:`path` itself)."""
        ...


class LocalStorage:
    """A :class:`Storage` in a directory; ``root`` is created on first write, not here."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    # -- keys and paths ---------------------------------------------------------------------

    def new_key(self, prefix: str, filename: str) -> str:
        """A fresh key ``<prefix>/<random token>/<sanitised filename>``; nothing is written."""
        return make_key(prefix, filename)

    def path(self, key: str) -> Path:
        """The file for ``key``. Refuses any key that is invalid or would land outside root.

        Besides the syntactic checks of :func:`validate_key`, the resolved path must stay under
        the resolved root, so a symlink planted inside the store cannot lead out of it.
        """
        validate_key(key)
        root = self.root.resolve()
        target = (root / key).resolve()
        if not target.is_relative_to(root) or target == root:
            raise MediaError(f"storage key {key!r} points outside the storage directory")
        return target

    def presigned_url(
        self,
        key: str,
        expires_s: int,
        *,
        content_type: str | None = None,
        content_disposition: str | None = None,
    ) -> str | None:
        """None: a local file has no URL of its own; the API serves it from :meth:`path`."""
        validate_key(key)
        return None

    # -- writing ----------------------------------------------------------------------------

    def open_write(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """Open ``key`` for writing; the file appears under its key only if the block succeeds.

        On an exception inside the block the temporary file is removed and the previous
        content of ``key`` (if any) is left untouched.
        """
        return atomic_write(self.path(key))

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically (replacing any previous content)."""
        with self.open_write(key) as f:
            f.write(data)

    def put_file(self, key: str, src_path: Path) -> None:
        """Copy the file at ``src_path`` under ``key`` atomically."""
        try:
            src = open(src_path, "rb")  # noqa: SIM115 - closed below, before the rename
        except OSError as exc:
            raise MediaError(f"cannot read {Path(src_path).name!r} to store it: {exc.strerror}") from exc
        with src, self.open_write(key) as f:
            shutil.copyfileobj(src, f, 1024 * 1024)

    def write_stream(self, key: str, chunks: Iterable[bytes], *, max_bytes: int) -> int:
        """Store an iterable of byte chunks; return the size. Over ``max_bytes`` -> TooLarge.

        The size is checked as chunks arrive, so an oversized upload is refused as soon as it
        crosses the limit and nothing is kept.
        """
        total = 0
        with self.open_write(key) as f:
            for chunk in chunks:
                total += len(chunk)
                if total > max_bytes:
                    raise TooLarge("upload", max_bytes)
                f.write(chunk)
        return total

    async def write_async_stream(self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int) -> int:
        """:meth:`write_stream` for an async iterable (e.g. a Starlette request stream).

        Chunks go to the page cache as they arrive (short writes, fine on the event loop); the
        final fsync and rename, which can take a while for a large file, run in a thread.
        """
        total = 0
        pending = AtomicFile.begin(self.path(key))
        try:
            async for chunk in chunks:
                total += len(chunk)
                if total > max_bytes:
                    raise TooLarge("upload", max_bytes)
                pending.file.write(chunk)
            await asyncio.to_thread(pending.commit)
        except BaseException:
            pending.abort()
            raise
        return total

    # -- reading and housekeeping -----------------------------------------------------------

    def read_bytes(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """The content of ``key``. Missing -> MediaNotFound; over ``max_bytes`` -> TooLarge."""
        target = self.path(key)
        try:
            with open(target, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if max_bytes is not None and size > max_bytes:
                    raise TooLarge(f"stored file {key!r}", max_bytes, size)
                return f.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise MediaNotFound(f"storage key {key!r} does not exist", key) from exc
        except OSError as exc:
            raise MediaError(f"cannot read storage key {key!r}: {exc.strerror}") from exc

    def exists(self, key: str) -> bool:
        """Whether ``key`` names a stored file."""
        return self.path(key).is_file()

    def size(self, key: str) -> int:
        """Size in bytes of ``key``; missing -> MediaNotFound."""
        target = self.path(key)
        if not target.is_file():
            raise MediaNotFound(f"storage key {key!r} does not exist", key)
        return target.stat().st_size

    def modified_at(self, key: str) -> float:
        """When ``key`` was last written (unix seconds); missing -> MediaNotFound."""
        target = self.path(key)
        if not target.is_file():
            raise MediaNotFound(f"storage key {key!r} does not exist", key)
        return target.stat().st_mtime

    def copy_to(self, key: str, dest: Path) -> int:
        """Copy the content of ``key`` to the local file ``dest``; return its size."""
        source = self.path(key)
        try:
            shutil.copyfile(source, dest)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise MediaNotFound(f"storage key {key!r} does not exist", key) from exc
        return dest.stat().st_size

    def sweep_unfinished(self, older_than_s: float, now: float) -> int:
        """Remove what writers killed mid-write left behind (see :func:`sweep_unfinished`)."""
        if not self.root.is_dir():
            return 0
        return len(sweep_unfinished(self.root, older_than_s, now))

    def list_keys(self, prefix: str) -> Iterator[str]:
        """Every stored key under the folder ``prefix``; hidden (temporary) files are skipped."""
        folder = self.path(prefix)
        root = self.root.resolve()
        for parent, dirs, files in os.walk(folder):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if not name.startswith("."):
                    yield (Path(parent) / name).relative_to(root).as_posix()

    def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it existed. The folders it leaves empty are pruned, up
        to its top-level one (``outputs/<token>/``, ``jobs/<id>/checkpoints/``...)."""
        target = self.path(key)
        try:
            target.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return False
        root = self.root.resolve()
        folder = target.parent
        while folder != root and folder.parent != root:
            try:
                folder.rmdir()
            except OSError:  # not empty, or already gone: both fine
                break
            folder = folder.parent
        return True
