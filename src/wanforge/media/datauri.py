"""``data:`` URIs (RFC 2397): the inline form of media in a request body.

Clients of the WaveSpeed API may send an image as ``data:image/png;base64,iVBOR...`` instead of
a URL. The size limit is checked from the length of the text before anything is decoded, so an
oversized URI costs no decoded allocation.
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse

from wanforge.media.errors import MediaError, TooLarge

__all__ = ["is_data_uri", "parse_data_uri"]

MAX_HEADER_CHARS = 512
DEFAULT_MIME = "text/plain"

_MIME = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")


def is_data_uri(value: str) -> bool:
    """Whether ``value`` starts with the ``data:`` scheme (case-insensitive)."""
    return value[:5].lower() == "data:"


def parse_data_uri(uri: str, *, max_bytes: int | None = None) -> tuple[str, bytes]:
    """Decode a ``data:`` URI into ``(mime type, bytes)``.

    Accepts base64 (standard or URL-safe alphabet, padding optional, whitespace ignored) and
    percent-encoded payloads. The MIME type is returned lower-cased without parameters
    (``text/plain`` when the URI names none). Raises :class:`MediaError` for anything malformed
    or empty and :class:`TooLarge` when the decoded size would exceed ``max_bytes``.
    """
    if not is_data_uri(uri):
        raise MediaError("not a data: URI (it must start with 'data:')")
    comma = uri.find(",", 5, 5 + MAX_HEADER_CHARS + 1)
    if comma < 0:
        if uri.find(",") < 0:
            raise MediaError("data URI has no ',' between its header and its data")
        raise MediaError(f"data URI header is longer than {MAX_HEADER_CHARS} characters")
    mime, is_base64 = _parse_header(urllib.parse.unquote(uri[5:comma]))
    payload = uri[comma + 1 :]
    data = _decode_base64(payload, max_bytes) if is_base64 else _decode_percent(payload, max_bytes)
    if not data:
        raise MediaError("data URI contains no data")
    return mime, data


def _parse_header(header: str) -> tuple[str, bool]:
    params = [p.strip() for p in header.split(";")]
    is_base64 = len(params) > 1 and params[-1].lower() == "base64"
    mime = params[0].lower()
    if not mime:
        return DEFAULT_MIME, is_base64
    if not _MIME.fullmatch(mime):
        raise MediaError(f"data URI has an invalid media type {params[0][:60]!r}")
    return mime, is_base64


def _decode_base64(payload: str, max_bytes: int | None) -> bytes:
    if max_bytes is not None and len(payload) > 2 * (max_bytes // 3 * 4 + 8) + 1024:
        # far too long even if half of it were whitespace: refuse without copying it
        raise TooLarge("data URI", max_bytes)
    compact = "".join(payload.split())
    if "%" in compact:
        compact = urllib.parse.unquote(compact)
    compact = compact.rstrip("=")
    estimate = len(compact) * 3 // 4
    if max_bytes is not None and estimate > max_bytes:
        raise TooLarge("data URI", max_bytes, estimate)
    if len(compact) % 4 == 1:
        raise MediaError("data URI has invalid base64 data: truncated (length is not valid base64)")
    padded = compact.translate(_URLSAFE_TO_STANDARD) + "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MediaError(f"data URI has invalid base64 data: {exc}") from exc


def _decode_percent(payload: str, max_bytes: int | None) -> bytes:
    # each decoded byte takes 1 to 3 characters, so a third of the length is a lower bound
    if max_bytes is not None and len(payload) // 3 > max_bytes:
        raise TooLarge("data URI", max_bytes)
    data = urllib.parse.unquote_to_bytes(payload)
    if max_bytes is not None and len(data) > max_bytes:
        raise TooLarge("data URI", max_bytes, len(data))
    return data
