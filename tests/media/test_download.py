"""Downloads straight to disk: `fetch_to_file`, the worker's `fetch_to_file`, the trainer's limit.

A training ZIP may be gigabytes; it must stream to its file in bounded memory and be bounded by
the training-data limit (`WANFORGE_MAX_TRAINING_DATA_BYTES`), not by the upload limit.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from wanforge.config import Settings
from wanforge.media import fetch
from wanforge.media.errors import MediaError, TooLarge
from wanforge.media.fetch import FetchedFile, fetch_to_file
from wanforge.media.storage import LocalStorage
from wanforge.store import uploads
from wanforge.store.db import Database
from wanforge.store.migrate import upgrade
from wanforge.vocabulary import ErrorCode
from wanforge.worker import train_task
from wanforge.worker.context import JobContext, TaskError

from .conftest import BODY, LocalServer

CHUNKS = 8_000  # the /chunked path sends 1000-byte chunks: 8 MB in all
PEAK_LIMIT = 4 * 1024 * 1024


def peak_memory(action: Callable[[], object]) -> int:
    """Peak bytes that Python allocated while `action` ran (every thread counted)."""
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_fetch_to_file_writes_the_body(http_server: LocalServer, tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    got = fetch_to_file(http_server.url("/ok"), target, max_bytes=1000, timeout_s=5.0, allow_private=True)
    assert got == FetchedFile(len(BODY), "image/png", http_server.url("/ok"))
    assert target.read_bytes() == BODY


def test_fetch_to_file_streams_in_bounded_memory(http_server: LocalServer, tmp_path: Path) -> None:
    target = tmp_path / "big.bin"
    url = http_server.url(f"/chunked?chunks={CHUNKS}")
    peak = peak_memory(
        lambda: fetch_to_file(url, target, max_bytes=20_000_000, timeout_s=30.0, allow_private=True)
    )
    assert target.stat().st_size == CHUNKS * 1000
    assert peak < PEAK_LIMIT


def test_fetch_to_file_over_the_limit_names_the_setting_and_keeps_nothing(
    http_server: LocalServer, tmp_path: Path
) -> None:
    target = tmp_path / "big.bin"
    with pytest.raises(TooLarge) as info:
        fetch_to_file(
            http_server.url("/chunked?chunks=5"),
            target,
            max_bytes=2500,
            timeout_s=5.0,
            allow_private=True,
            label="data URL",
            limit_setting="WANFORGE_MAX_TRAINING_DATA_BYTES",
        )
    assert str(info.value) == (
        "the file at the data URL is larger than the limit of 2500 bytes (2.4 KiB); "
        "WANFORGE_MAX_TRAINING_DATA_BYTES sets the limit"
    )
    assert not target.exists()


def test_fetch_url_still_names_the_image_limit(http_server: LocalServer) -> None:
    with pytest.raises(TooLarge) as info:
        fetch.fetch_url(http_server.url("/sized?n=2000"), max_bytes=1000, timeout_s=5.0, allow_private=True)
    assert str(info.value).endswith("WANFORGE_MAX_DOWNLOAD_BYTES sets the limit")


def job_context(settings: Settings, tmp_path: Path) -> JobContext:
    """A context with only what fetching needs: the store says whose an own file is."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url())
    db = Database(settings.resolved_database_url())
    prediction = SimpleNamespace(server_base=None, input={}, id="p" * 32, result={}, api_key_id=None)
    return JobContext(
        settings=settings,
        storage=LocalStorage(settings.storage_dir),
        prediction=cast(Any, prediction),
        lease=cast(Any, SimpleNamespace(db=db, should_stop=lambda: False)),
        progress=cast(Any, SimpleNamespace(report=lambda *a, **k: None, log=lambda *a: None)),
        job_dir=tmp_path / "job",
    )


def test_worker_fetch_to_file_streams_remote_urls(
    http_server: LocalServer, tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def in_memory(*args: object, **kwargs: object) -> object:
        raise AssertionError("a remote file for the trainer was read into memory")

    monkeypatch.setattr(fetch, "fetch_url", in_memory)
    ctx = job_context(settings, tmp_path)
    target = tmp_path / "data.zip"
    url = http_server.url(f"/chunked?chunks={CHUNKS}")
    peak = peak_memory(lambda: ctx.fetch_to_file(url, "data", target, max_bytes=20_000_000))
    assert target.stat().st_size == CHUNKS * 1000
    assert not target.with_name("data.zip.part").exists()
    assert peak < PEAK_LIMIT


def test_worker_fetch_to_file_refuses_an_oversized_own_upload_by_its_setting(
    tmp_path: Path, settings: Settings
) -> None:
    ctx = job_context(settings, tmp_path)
    key = ctx.storage.new_key("uploads", "data.zip")
    ctx.storage.put_bytes(key, b"z" * 3000)
    uploads.create_upload(
        ctx.lease.db,
        key=key,
        filename="data.zip",
        content_type="application/zip",
        declared_size=3000,
        put_token=None,
        api_key_id=None,
    )
    with pytest.raises(TaskError) as info:
        ctx.fetch_to_file(
            f"/files/{key}",
            "data",
            tmp_path / "data.zip",
            max_bytes=2000,
            limit_setting="WANFORGE_MAX_TRAINING_DATA_BYTES",
        )
    assert info.value.code == ErrorCode.MEDIA_ACCESS_FAILED
    assert info.value.message == (
        "cannot read data: the upload is 3000 bytes (2.9 KiB), over the limit of 2000 bytes (2.0 KiB); "
        "WANFORGE_MAX_TRAINING_DATA_BYTES sets the limit"
    )
    assert not (tmp_path / "data.zip").exists()


def test_trainer_data_is_bounded_by_the_training_data_limit(
    http_server: LocalServer, tmp_path: Path, settings: Settings
) -> None:
    settings.max_upload_bytes = 10**9
    settings.max_training_data_bytes = 2500
    ctx = job_context(settings, tmp_path)
    ctx.prediction.input = {"data": http_server.url("/chunked?chunks=5")}
    with pytest.raises(TaskError) as info:
        train_task.run_train(ctx, cast(Any, None))
    assert info.value.code == ErrorCode.MEDIA_ACCESS_FAILED
    assert info.value.message == (
        "cannot read data: the file at the data URL is larger than the limit of 2500 bytes (2.4 KiB); "
        "WANFORGE_MAX_TRAINING_DATA_BYTES sets the limit"
    )


def test_unknown_scheme_for_a_file_download_is_refused(tmp_path: Path, settings: Settings) -> None:
    ctx = job_context(settings, tmp_path)
    with pytest.raises(TaskError) as info:
        ctx.fetch_to_file("ftp://example.com/a.zip", "data", tmp_path / "a.zip", max_bytes=100)
    assert info.value.message.startswith(
        "cannot read data: data URL 'ftp://example.com/a.zip' uses the unsupported"
    )
    assert isinstance(info.value.__cause__, MediaError)


def test_trainer_data_has_its_own_time_limit(
    http_server: LocalServer, tmp_path: Path, settings: Settings
) -> None:
    """A training ZIP of gigabytes needs minutes: it is timed by its own setting, not the image one."""
    settings.fetch_timeout_s = 0.05  # the image limit: it must not be the one that applies
    settings.training_data_timeout_s = 0.2
    ctx = job_context(settings, tmp_path)
    ctx.prediction.input = {"data": http_server.url("/slow?s=1")}
    with pytest.raises(TaskError) as info:
        train_task.run_train(ctx, cast(Any, None))
    assert info.value.code == ErrorCode.MEDIA_ACCESS_FAILED
    assert info.value.message == (
        "cannot read data: data URL timed out after 0.2 s; WANFORGE_TRAINING_DATA_TIMEOUT_S sets the limit"
    )
