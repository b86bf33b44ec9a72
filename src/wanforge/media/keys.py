"""Storage keys: the only names under which artifacts are stored and served.

A key is a relative POSIX path such as ``uploads/<token>/<filename>`` or
``outputs/<token>/<filename>``. Keys reach the server from the outside (``GET /files/<key>``,
media URLs in requests), so validation is an allow-list rather than a deny-list: every part
must match ``[A-Za-z0-9_-][A-Za-z0-9._-]*``. That alone refuses ``..``, ``.``, empty parts,
absolute paths, backslashes, drive letters, NUL bytes and hidden (dot) files, which is where
the stores keep their temporary files.

A job's scratch (a training job's checkpoints) lives under ``jobs/<prediction id>/...``: a fixed
key every node can find again, made only by :func:`job_scratch_key`, and never served by
``GET /files/...`` (:func:`is_scratch_key`).
"""

from __future__ import annotations

import re
import secrets
import unicodedata

from wanforge.media.errors import MediaError

__all__ = [
    "MAX_FILENAME_CHARS",
    "MAX_KEY_CHARS",
    "SCRATCH_PREFIX",
    "is_scratch_key",
    "job_scratch_key",
    "make_key",
    "safe_filename",
    "validate_key",
]

MAX_KEY_CHARS = 1024
MAX_PART_CHARS = 255
MAX_FILENAME_CHARS = 100
MAX_EXTENSION_CHARS = 10
SCRATCH_PREFIX = "jobs"

_PART = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")
_EXTENSION = re.compile(rf"[a-z0-9]{{1,{MAX_EXTENSION_CHARS}}}")


def _shown(key: str) -> str:
    """A key as quoted in an error message: repr, cut to a readable length."""
    return repr(key if len(key) <= 80 else key[:77] + "...")


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it is a safe storage key, else raise :class:`MediaError`."""
    if not isinstance(key, str) or not key:
        raise MediaError("storage key is empty")
    if len(key) > MAX_KEY_CHARS:
        raise MediaError(f"storage key is longer than {MAX_KEY_CHARS} characters")
    if key.startswith("/"):
        raise MediaError(f"storage key {_shown(key)} must be relative, not an absolute path")
    if "\\" in key:
        raise MediaError(f"storage key {_shown(key)} must use '/' separators, not backslashes")
    for part in key.split("/"):
        if not part:
            raise MediaError(f"storage key {_shown(key)} has an empty path segment")
        if part in (".", ".."):
            raise MediaError(f"storage key {_shown(key)} may not contain '.' or '..' segments")
        if len(part) > MAX_PART_CHARS:
            raise MediaError(f"storage key {_shown(key)} has a segment over {MAX_PART_CHARS} characters")
        if not _PART.fullmatch(part):
            raise MediaError(
                f"storage key {_shown(key)} has a segment {_shown(part)} with characters outside "
                "A-Z a-z 0-9 . _ - (or one starting with '.')"
            )
    return key


def safe_filename(filename: str) -> str:
    """A filename that is safe as the last part of a key, keeping what is recognisable.

    The directory part is dropped (both ``/`` and ``\\``), accents are folded to ASCII, runs of
    other characters become ``_``, the extension is kept (lower-cased) when it looks like one,
    and the stem is capped so the whole name stays under :data:`MAX_FILENAME_CHARS`. A name with
    nothing usable left becomes ``file`` (plus its extension).
    """
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    stem, ext = base, ""
    dot = base.rfind(".")
    if dot > 0:
        candidate = base[dot + 1 :].lower()
        if _EXTENSION.fullmatch(candidate):
            stem, ext = base[:dot], candidate
    stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    stem = _UNSAFE_RUN.sub("_", stem).strip("._-")
    budget = MAX_FILENAME_CHARS - (len(ext) + 1 if ext else 0)
    stem = stem[:budget].rstrip("._-") or "file"
    return f"{stem}.{ext}" if ext else stem


def make_key(prefix: str, filename: str) -> str:
    """A new, unguessable key ``<prefix>/<token>/<safe filename>``.

    The token carries 192 bits from :func:`secrets.token_urlsafe`, so knowing one key tells
    nothing about another; ``prefix`` must itself be a valid key (``uploads``, ``outputs``, ...).
    """
    validate_key(prefix)
    key = f"{prefix}/{secrets.token_urlsafe(24)}/{safe_filename(filename)}"
    return validate_key(key)


def job_scratch_key(job_id: str, *parts: str) -> str:
    """The fixed key ``jobs/<job_id>/<parts...>`` of a job's scratch, e.g. its checkpoints.

    Each of ``job_id`` and ``parts`` must be one valid key segment (no ``/``), so a job's scratch
    can never land outside its own folder, nor in another job's.
    """
    for part in (job_id, *parts):
        if "/" in part or not _PART.fullmatch(part) or len(part) > MAX_PART_CHARS:
            raise MediaError(f"job scratch key segment {_shown(part)} is not one safe key segment")
    return validate_key("/".join((SCRATCH_PREFIX, job_id, *parts)))


def is_scratch_key(key: str) -> bool:
    """Whether ``key`` is a job's scratch (workers' own; never served to clients)."""
    return key.split("/", 1)[0] == SCRATCH_PREFIX
