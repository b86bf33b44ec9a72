"""What a task gets to do its work: the store, the storage, its lease, progress, a scratch dir."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wanforge.config import Settings
from wanforge.media.storage import Storage
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
    storage: Storage
    prediction: Prediction
    lease: Lease
    progress: ProgressReporter
    job_dir: Path
    # seconds each denoising step took (for /metrics; the worker adds them to the store's counts)
    step_seconds: list[float] = field(default_factory=list)
    # storage keys of the job's scratch (a training job's stored checkpoints): they outlive an
    # attempt, for the next one on any node, and are deleted once the job's outcome is recorded
    scratch_keys: list[str] = field(default_factory=list)

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

    def check_owner(self, storage_key: str, what: str) -> None:
        """Refuse (1402, as not found) this server's file `storage_key` unless it is the
        prediction's key's own upload or output (any, for an admin key). The API checks this at
        submit; this catches a file whose owner it could not know then."""
        from wanforge.media.resolve import FILES_PREFIX
        from wanforge.store.files import Access, file_access

        if file_access(self.lease.db, storage_key, self.prediction.api_key_id) is not Access.OWN:
            raise TaskError(
                ErrorCode.MEDIA_ACCESS_FAILED,
                f"cannot read {what}: upload not found: {what} URL points to {FILES_PREFIX}{storage_key}",
            )

    def own_base_urls(self) -> list[str]:
        own = [self.prediction.server_base] if self.prediction.server_base else []
        return [*own, *self.settings.own_base_urls]

    def fetch_to_file(
        self,
        url: str,
        what: str,
        target: Path,
        max_bytes: int,
        limit_setting: str = "WANFORGE_MAX_DOWNLOAD_BYTES",
        timeout_s: float | None = None,
        timeout_setting: str = "WANFORGE_FETCH_TIMEOUT_S",
    ) -> None:
        """Put the media at `url` into `target`, never holding it in memory: an own upload is
        copied from storage, a data: URI decoded, anything else streamed to disk under the fetch
        rules. Over `max_bytes` is refused with a message naming `limit_setting`."""
        from wanforge.media.errors import MediaError, StorageUnavailable, TooLarge
        from wanforge.media.resolve import own_file_key, save_media

        partial = target.with_name(target.name + ".part")
        key = own_file_key(url, self.own_base_urls())
        if key is not None:
            self.check_owner(key, what)
        try:
            if key is not None:
                if not self.storage.exists(key):
                    raise MediaError(f"upload not found: {url}")
                size = self.storage.size(key)
                if size > max_bytes:
                    raise TooLarge("the upload", max_bytes, size, hint=f"{limit_setting} sets the limit")
                self.storage.copy_to(key, partial)
            else:
                save_media(
                    url,
                    partial,
                    max_bytes=max_bytes,
                    timeout_s=timeout_s or self.settings.fetch_timeout_s,
                    allow_private=self.settings.allow_private_urls,
                    label=f"{what} URL",
                    limit_setting=limit_setting,
                    timeout_setting=timeout_setting,
                )
        except StorageUnavailable:  # the storage's outage, not the input's fault: the loop retries
            partial.unlink(missing_ok=True)
            raise
        except MediaError as exc:
            partial.unlink(missing_ok=True)
            raise TaskError(ErrorCode.MEDIA_ACCESS_FAILED, f"cannot read {what}: {exc}") from exc
        partial.replace(target)

    def read_media(self, url: str, what: str, max_bytes: int | None = None) -> bytes:
        """Read a user-given media URL (own upload, data: URI or remote) under the fetch rules."""
        from wanforge.media.errors import MediaError, StorageUnavailable
        from wanforge.media.resolve import own_file_key, read_media

        if (key := own_file_key(url.strip(), self.own_base_urls())) is not None:
            self.check_owner(key, what)
        try:
            return read_media(
                url,
                storage=self.storage,
                own_base_urls=self.own_base_urls(),
                max_bytes=max_bytes or self.settings.max_download_bytes,
                timeout_s=self.settings.fetch_timeout_s,
                allow_private=self.settings.allow_private_urls,
            )
        except StorageUnavailable:  # the storage's outage, not the input's fault: the loop retries
            raise
        except MediaError as exc:
            raise TaskError(ErrorCode.MEDIA_ACCESS_FAILED, f"cannot read {what}: {exc}") from exc


Task = Callable[[JobContext], TaskOutcome]
