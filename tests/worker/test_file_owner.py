"""The worker re-checks whose a file of this server is before it reads it as an input: another
key's upload or output is refused with 1402, worded as not found, like a missing one."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from wanforge.config import Settings
from wanforge.media.errors import StorageUnavailable
from wanforge.media.storage import LocalStorage
from wanforge.store import jobs, uploads
from wanforge.store.db import Database
from wanforge.store.keys import KeyOptions, create_key
from wanforge.vocabulary import ErrorCode
from wanforge.worker.context import JobContext, TaskError
from wanforge.worker.lease import Lease
from wanforge.worker.progress import ProgressReporter
from wanforge.worker.scrub import is_storage_error

BASE = "http://api.example"


def _context(db: Database, settings: Settings, owner: str | None, tmp_path: Path) -> JobContext:
    row = jobs.create_prediction(
        db, model="m", kind="generate", input={}, server_base=BASE, max_attempts=3, api_key_id=owner
    )
    claimed = jobs.claim_next(db, "w", 30, ("generate",))
    assert claimed is not None and claimed.id == row.id
    return JobContext(
        settings=settings,
        storage=LocalStorage(settings.storage_dir),
        prediction=claimed,
        lease=Lease(db, row.id, "w", 30, threading.Event()),
        progress=ProgressReporter(db, row.id, "w"),
        job_dir=tmp_path,
    )


def _uploaded(db: Database, settings: Settings, owner: str) -> str:
    storage = LocalStorage(settings.storage_dir)
    key = storage.new_key("uploads", "a.png")
    storage.put_bytes(key, b"png")
    uploads.create_upload(
        db,
        key=key,
        filename="a.png",
        content_type="image/png",
        declared_size=3,
        put_token=None,
        api_key_id=owner,
    )
    return key


def test_another_keys_upload_is_not_read(db: Database, settings: Settings, tmp_path: Path) -> None:
    one, two = (create_key(db, n)[1].id for n in ("one", "two"))
    key = _uploaded(db, settings, one)
    ctx = _context(db, settings, two, tmp_path)
    for read in (
        lambda: ctx.read_media(f"{BASE}/files/{key}", "image"),
        lambda: ctx.fetch_to_file(f"/files/{key}", "data", tmp_path / "d.zip", 100),
    ):
        with pytest.raises(TaskError) as err:
            read()
        assert err.value.code == ErrorCode.MEDIA_ACCESS_FAILED
        assert "upload not found" in err.value.message and f"/files/{key}" in err.value.message
    assert not (tmp_path / "d.zip").exists()


def test_own_and_admin_reads_pass(db: Database, settings: Settings, tmp_path: Path) -> None:
    one = create_key(db, "one")[1].id
    admin = create_key(db, "admin", KeyOptions(is_admin=True))[1].id
    key = _uploaded(db, settings, one)
    assert _context(db, settings, one, tmp_path).read_media(f"{BASE}/files/{key}", "image") == b"png"
    assert _context(db, settings, admin, tmp_path).read_media(f"/files/{key}", "image") == b"png"


def test_a_file_that_is_nobodys_is_not_read(db: Database, settings: Settings, tmp_path: Path) -> None:
    one = create_key(db, "one")[1].id
    storage = LocalStorage(settings.storage_dir)
    stray = storage.new_key("uploads", "s.png")
    storage.put_bytes(stray, b"png")
    with pytest.raises(TaskError) as err:
        _context(db, settings, one, tmp_path).read_media(f"/files/{stray}", "image")
    assert err.value.code == ErrorCode.MEDIA_ACCESS_FAILED and "upload not found" in err.value.message


class DownStorage(LocalStorage):
    """Local storage whose reads fail as an unreachable object store's do."""

    def _down(self, key: str) -> None:
        raise StorageUnavailable(f"object storage unavailable for storage key {key!r}: ReadTimeoutError")

    def exists(self, key: str) -> bool:
        self._down(key)
        return False

    def read_bytes(self, key: str, *, max_bytes: int | None = None) -> bytes:
        self._down(key)
        return b""


def test_an_unavailable_storage_is_not_a_media_error(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    """The store's outage is not the input's fault: it propagates (an OSError the worker loop puts
    the job back for, WANFORGE_STORAGE_RETRIES), instead of failing the job with 1402."""
    one = create_key(db, "one")[1].id
    key = _uploaded(db, settings, one)
    ctx = _context(db, settings, one, tmp_path)
    ctx.storage = DownStorage(settings.storage_dir)
    for read in (
        lambda: ctx.read_media(f"{BASE}/files/{key}", "image"),
        lambda: ctx.fetch_to_file(f"/files/{key}", "data", tmp_path / "d.zip", 100),
    ):
        with pytest.raises(StorageUnavailable) as err:
            read()
        assert is_storage_error(err.value)
    assert not (tmp_path / "d.zip").exists() and not (tmp_path / "d.zip.part").exists()
