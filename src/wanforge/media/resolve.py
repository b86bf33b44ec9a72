"""Turning a media reference from a request into bytes.

A media field (``image``, ``last_image``, the trainer's ``data``) may hold:

1. a ``data:`` URI -> decoded inline;
2. a URL of this server's own artifact, ``{base}/files/{key}`` where ``{base}`` is one of the
   server's public base URLs (``download_url`` of an upload, an earlier output), or the bare
   path ``/files/{key}`` -> read from storage directly, with no network round trip (which
   would otherwise be refused as a loopback/private address, and would be slower);
3. any other ``http``/``https`` URL -> :func:`wanforge.media.fetch.fetch_url` with all its
   checks.

Anything else is a :class:`MediaError` that names the problem.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from wanforge.media.addresses import literal_address
from wanforge.media.datauri import is_data_uri, parse_data_uri
from wanforge.media.errors import MediaError, MediaNotFound
from wanforge.media.fetch import MAX_BYTES_SETTING, TIMEOUT_SETTING, fetch_to_file, fetch_url
from wanforge.media.storage import Storage

__all__ = ["FILES_PREFIX", "own_file_key", "read_media", "save_media"]

FILES_PREFIX = "/files/"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def read_media(
    url: str,
    *,
    storage: Storage,
    own_base_urls: Sequence[str],
    max_bytes: int,
    timeout_s: float,
    allow_private: bool,
    label: str = "media URL",
) -> bytes:
    """The bytes that ``url`` refers to (see the module docstring for the accepted forms).

    ``label`` names the field in error messages (e.g. ``"image URL"``). ``max_bytes`` applies
    to every form: the decoded data URI, the stored file and the download.
    """
    url = _non_empty(url, label)
    if is_data_uri(url):
        return parse_data_uri(url, max_bytes=max_bytes)[1]
    key = own_file_key(url, own_base_urls)
    if key is not None:
        try:
            return storage.read_bytes(key, max_bytes=max_bytes)
        except MediaNotFound as exc:
            raise MediaNotFound(f"upload not found: {label} points to {FILES_PREFIX}{key}", key) from exc
    _scheme(url, label)
    return fetch_url(
        url, max_bytes=max_bytes, timeout_s=timeout_s, allow_private=allow_private, label=label
    ).data


def save_media(
    url: str,
    target: Path,
    *,
    max_bytes: int,
    timeout_s: float,
    allow_private: bool,
    label: str = "media URL",
    limit_setting: str = MAX_BYTES_SETTING,
    timeout_setting: str = TIMEOUT_SETTING,
) -> int:
    """Write the bytes of a ``data:`` URI or an ``http(s)`` URL to ``target``; return the size.

    A download streams to disk (see :func:`fetch_to_file`), so a large file never sits in
    memory. This server's own ``/files/`` URLs are the caller's to recognise first
    (:func:`own_file_key`): copying a stored file is a storage matter.
    """
    url = _non_empty(url, label)
    if is_data_uri(url):
        data = parse_data_uri(url, max_bytes=max_bytes)[1]
        target.write_bytes(data)
        return len(data)
    _scheme(url, label)
    return fetch_to_file(
        url,
        target,
        max_bytes=max_bytes,
        timeout_s=timeout_s,
        allow_private=allow_private,
        label=label,
        limit_setting=limit_setting,
        timeout_setting=timeout_setting,
    ).size


def _non_empty(url: object, label: str) -> str:
    if not isinstance(url, str):
        raise MediaError(f"{label} must be a string, not {type(url).__name__}")
    url = url.strip()
    if not url:
        raise MediaError(f"{label} is empty")
    return url


def _scheme(url: str, label: str) -> str:
    """``http`` or ``https``; any other scheme, or none, is a MediaError naming the problem."""
    try:
        scheme = urllib.parse.urlsplit(url).scheme.lower()
    except ValueError as exc:  # e.g. an unbalanced '[' in the host
        raise MediaError(f"{label} is not a valid URL: {exc}") from exc
    if scheme in ("http", "https"):
        return scheme
    shown = repr(url if len(url) <= 60 else url[:57] + "...")
    if scheme:
        raise MediaError(
            f"{label} {shown} uses the unsupported scheme {scheme}:; "
            f"expected an http(s) URL, a data: URI or {FILES_PREFIX}<key>"
        )
    raise MediaError(
        f"{label} {shown} is not a URL; expected an http(s) URL, a data: URI or {FILES_PREFIX}<key>"
    )


def own_file_key(url: str, own_base_urls: Sequence[str]) -> str | None:
    """The storage key if ``url`` is one of this server's ``/files/<key>`` URLs, else None.

    Matches the bare path ``/files/<key>`` and ``{base}/files/<key>`` for each base URL, with
    the scheme and host compared case-insensitively, every spelling of an address alike and
    every loopback host one (see `_host`), and default ports normalised. The query
    and fragment are ignored; the key is percent-decoded but not validated here (storage
    validates every key it is given).
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return None
    if not parts.scheme and not parts.netloc:
        return _key_after(parts.path, "")
    origin = _origin(parts)
    if origin is None:
        return None
    for base in own_base_urls:
        base_parts = urllib.parse.urlsplit(base.strip().rstrip("/"))
        if _origin(base_parts) == origin:
            key = _key_after(parts.path, base_parts.path)
            if key is not None:
                return key
    return None


def _key_after(path: str, base_path: str) -> str | None:
    prefix = base_path.rstrip("/") + FILES_PREFIX
    if not path.startswith(prefix):
        return None
    return urllib.parse.unquote(path[len(prefix) :])


def _origin(parts: urllib.parse.SplitResult) -> tuple[str, str, int] | None:
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:  # a port that is not a number
        return None
    return scheme, _host(parts.hostname), port


LOOPBACK = "loopback"  # every spelling of this machine's loopback addresses, as one host


def _host(hostname: str) -> str:
    """A host as an origin compares it: every spelling of one address alike (`127.1`,
    `0x7f000001`, `[::ffff:127.0.0.1]` are 127.0.0.1), the loopback addresses and `localhost`
    all one (this machine), a name lower-cased without its trailing dot."""
    name = hostname.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return LOOPBACK
    address = literal_address(name)
    if address is None:
        return name
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return LOOPBACK if address.is_loopback else str(address)
