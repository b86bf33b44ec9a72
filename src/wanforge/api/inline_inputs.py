"""Large `data:` inputs are stored as uploads of their prediction, not in its row.

A `data:` image in a request body would otherwise live in the `predictions` row for as long as
the prediction does (megabytes of JSON that every read of the row parses), and count nowhere.
At submit each `data:` URI longer than `INLINE_MAX_CHARS` in a media field is decoded, written to
storage as an upload of the key (recorded with the prediction, which deletes it), and replaced in
the stored input by that file's URL on this server, which the worker reads from storage as it
reads any upload. What is kept counts in the key's storage (store/storage_quota.py).
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

from wanforge.api.errors import ApiError
from wanforge.api.tenancy import TEXT_FIELDS
from wanforge.media.datauri import is_data_uri, parse_data_uri
from wanforge.media.errors import MediaError
from wanforge.media.storage import Storage
from wanforge.predictions import file_url
from wanforge.store.storage_quota import InlineUpload
from wanforge.vocabulary import ErrorCode

# a data: URI up to this many characters stays in the row (a thumbnail, a test image)
INLINE_MAX_CHARS = 16 * 1024


def _large_data_uris(value: Any, path: str) -> Iterator[tuple[str, Any, Any, str]]:
    """(field name as messages give it, container, index or key, the URI) of each large data: URI."""
    items: Any = (
        value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    )
    for name, item in items:
        if isinstance(value, dict) and name in TEXT_FIELDS:
            continue
        field = f"{path}[{name}]" if isinstance(value, list) else f"{path}.{name}" if path else str(name)
        if isinstance(item, str) and len(item) > INLINE_MAX_CHARS and is_data_uri(item):
            yield field, value, name, item
        elif isinstance(item, dict | list):
            yield from _large_data_uris(item, field)


def store_inline_inputs(body: dict[str, Any], storage: Storage, base: str) -> list[InlineUpload]:
    """Move the large `data:` URIs of `body` (changed in place) into storage; what was stored.
    A URI that cannot be decoded is refused (400/1401 naming the field), with nothing kept."""
    stored: list[InlineUpload] = []
    try:
        for field, container, index, uri in list(_large_data_uris(body, "")):
            try:
                mime, data = parse_data_uri(uri)
            except MediaError as exc:
                raise ApiError(400, f"invalid parameter {field}: {exc}", ErrorCode.INVALID_PARAMETER) from exc
            filename = "input" + (mimetypes.guess_extension(mime) or ".bin")
            key = storage.new_key("uploads", filename)
            size = storage.write_stream(key, [data], max_bytes=len(data))
            stored.append(InlineUpload(key, filename, mime, size))
            container[index] = file_url(base, key)
    except BaseException:
        discard(stored, storage)
        raise
    return stored


def discard(stored: list[InlineUpload], storage: Storage) -> None:
    """Delete what `store_inline_inputs` wrote (the submission was refused)."""
    for upload in stored:
        with suppress(Exception):
            storage.delete(upload.key)
