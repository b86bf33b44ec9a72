"""What a task gets to do its work: the store, the storage, its lease, progress, a scratch dir."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wanforge.config import Settings
from wanforge.media.storage import LocalStorage
from wanforge.store.tables import Prediction
from wanforge.vocabulary import ErrorCode
from wanforge.worker.lease import Lease
from wanforge.worker.progress import ProgressReporter


class TaskError(Exception):
    """A task failure with its WaveSpeed error code (1401, 1402, 1403, ...)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TaskStopped(Exception):
    """The task stopped between steps because its lease asked it to (cancel, lost, shutdown)."""


@dataclass
class TaskOutcome:
    outputs: list[str]  # storage keys
    result: dict[str, Any]


@dataclass
class JobContext:
    settings: Settings
    storage: LocalStorage
    prediction: Prediction
    lease: Lease
    progress: ProgressReporter
    job_dir: Path

    def remember(self, facts: dict[str, Any]) -> None:
        """Merge facts into the prediction's result now, before the work is done.

        Retried through a locked store for up to `store_retry_s`; then StoreUnavailable stops the
        task and the job is given back (the attempt not counted)."""
        from wanforge.store import jobs
        from wanforge.worker.retry import retry_store

        merged = {**(self.prediction.result or {}), **facts}
        self.prediction.result = merged
        retry_store(
            lambda: jobs.save_result(self.lease.db, self.prediction.id, self.lease.worker_id, merged),
            what=f"job {self.prediction.id}: saving its result",
            stop=self.lease.shutdown,
            within_s=self.settings.store_retry_s,
        )

    def own_base_urls(self) -> list[str]:
        own = [self.prediction.server_base] if self.prediction.server_base else []
        if self.settings.public_url:
            own.append(self.settings.public_url)
        return own

    def fetch_to_file(self, url: str, what: str, target: Path, max_bytes: int) -> None:
        """Put the media at `url` into `target`: an own upload is copied from storage (no size
        round trip through memory), anything else is read under the fetch rules."""
        from wanforge.media.errors import MediaError
        from wanforge.media.resolve import own_file_key

        partial = target.with_name(target.name + ".part")
        key = own_file_key(url, self.own_base_urls())
        if key is not None:
            try:
                source = self.storage.path(key)
            except MediaError as exc:
                raise TaskError(ErrorCode.MEDIA_ACCESS_FAILED, f"cannot read {what}: {exc}") from exc
            if not source.is_file():
                raise TaskError(ErrorCode.MEDIA_ACCESS_FAILED, f"cannot read {what}: upload not found: {url}")
            if source.stat().st_size > max_bytes:
                raise TaskError(
                    ErrorCode.MEDIA_ACCESS_FAILED,
                    f"cannot read {what}: the upload is over the limit of {max_bytes} bytes",
                )
            shutil.copyfile(source, partial)
        else:
            partial.write_bytes(self.read_media(url, what, max_bytes=max_bytes))
        partial.replace(target)

    def read_media(self, url: str, what: str, max_bytes: int | None = None) -> bytes:
        """Read a user-given media URL (own upload, data: URI or remote) under the fetch rules."""
        from wanforge.media.errors import MediaError
        from wanforge.media.resolve import read_media

        try:
            return read_media(
                url,
                storage=self.storage,
                own_base_urls=self.own_base_urls(),
                max_bytes=max_bytes or self.settings.max_download_bytes,
                timeout_s=self.settings.fetch_timeout_s,
                allow_private=self.settings.allow_private_urls,
            )
        except MediaError as exc:
            raise TaskError(ErrorCode.MEDIA_ACCESS_FAILED, f"cannot read {what}: {exc}") from exc


Task = Callable[[JobContext], TaskOutcome]
