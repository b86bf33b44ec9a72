"""Tenancy at the API: what a key may see, and which of this server's files it may use as inputs.

A key sees its own predictions; an admin key sees all. Another key's prediction or file is
answered exactly as one that does not exist.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from wanforge.api.errors import ApiError
from wanforge.config import Settings
from wanforge.media.resolve import FILES_PREFIX, own_file_key
from wanforge.store.db import Database
from wanforge.store.files import Access, file_access
from wanforge.store.jobs import ANYONE
from wanforge.store.quotas import Limits
from wanforge.store.tables import ApiKey
from wanforge.vocabulary import ErrorCode

# free text: never read as a media reference, whatever it says
TEXT_FIELDS = frozenset({"prompt", "negative_prompt", "trigger_word"})


def visible_to(key: ApiKey) -> str | None:
    """The `visible_to` of the store's queries for `key`: its id, or ANYONE for an admin key."""
    return ANYONE if key.is_admin else key.id


def limits_for(key: ApiKey, settings: Settings) -> Limits:
    return Limits(
        rpm=settings.default_rpm if key.rpm is None else key.rpm,
        concurrency=settings.default_concurrency if key.concurrency is None else key.concurrency,
        max_queued=settings.max_queued,
        retry_after_s=settings.retry_after_s,
        key_max_queued=settings.default_max_queued if key.max_queued is None else key.max_queued,
    )


def storage_quota_for(key: ApiKey, settings: Settings) -> int:
    """The bytes `key` may store (store/storage_quota.py); 0 = unlimited."""
    return settings.default_storage_quota_bytes if key.storage_quota is None else key.storage_quota


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(field path, value) of every string in a request body, as messages name fields: `loras[0].path`."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for name, item in value.items():
            if name not in TEXT_FIELDS:
                yield from _strings(item, f"{path}.{name}" if path else str(name))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{path}[{i}]")


def check_own_files(db: Database, key: ApiKey, body: dict[str, Any], own_base_urls: Sequence[str]) -> None:
    """Refuse (400/1401, worded as not found) a media field that points to another key's upload
    or output on this server. A file no upload or output has is left to the worker, which answers
    1402 when it finds nothing there (or only a file that is nobody's)."""
    for field, value in _strings(body, ""):
        storage_key = own_file_key(value.strip(), own_base_urls)
        if storage_key is None:
            continue
        if file_access(db, storage_key, key.id) is Access.OTHER:
            raise ApiError(
                400,
                f"invalid parameter {field}: upload not found: {field} points to {FILES_PREFIX}{storage_key}",
                ErrorCode.INVALID_PARAMETER,
            )
