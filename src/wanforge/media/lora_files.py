"""LoRA files: what a request's LoRA `path` may be, and whether a file is a safetensors file.

Pure helpers (no network, no torch): the API checks a path's shape at submission with
:func:`check_lora_path`; the worker sorts a path into its source with :func:`lora_source`, finds
operator files with :func:`find_in_lora_dir`, and reads every file's header with
:func:`check_safetensors` before the engine sees it.

Only safetensors is accepted: a PyTorch pickle (`.pt`, `.pth`, `.ckpt`, `.bin`, `.pkl`) can run
code when it is loaded, so it is refused by its name and by its first bytes, never opened.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from safetensors import SafetensorError, safe_open

__all__ = [
    "CONVERT_HINT",
    "LORA_NAME_MAX_CHARS",
    "LORA_PATH_MAX_CHARS",
    "LoraFileError",
    "LoraSource",
    "check_lora_path",
    "check_safetensors",
    "find_in_lora_dir",
    "lora_source",
    "sha256_file",
]

LORA_PATH_MAX_CHARS = 8192  # a URL, as for images
LORA_NAME_MAX_CHARS = 255  # a file name in the LoRA directory
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")
CONVERT_HINT = (
    "PyTorch pickle files (.pt, .pth, .ckpt, .bin) are never loaded here, because loading one can "
    "run code; convert it to .safetensors (e.g. `safetensors.torch.save_file(torch.load(f), "
    "'lora.safetensors')` on a machine you trust) and send that"
)
PATH_HINT = (
    "must be an http(s) URL, a URL of this server's files (/files/...), or the name of a file in "
    "the server's LoRA directory"
)
# safetensors' own limit on the JSON header (100 MB); a LoRA's is a few hundred KB
MAX_HEADER_BYTES = 100_000_000
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9 ._+=@,()\[\]-]*$")

SourceKind = Literal["url", "name"]


class LoraFileError(ValueError):
    """The LoRA path or file is not acceptable; the message says why (no server paths)."""


@dataclass(frozen=True)
class LoraSource:
    """A LoRA `path` sorted by kind: a URL (remote, or this server's `/files/` URL) or a name."""

    kind: SourceKind
    value: str


def _pickle_name(path: str) -> bool:
    return path.lower().endswith(PICKLE_SUFFIXES)


def lora_source(path: str) -> LoraSource:
    """Sort a LoRA `path`; raise LoraFileError for a shape no source accepts."""
    value = path.strip()
    lowered = value.lower()
    if not value:
        raise LoraFileError(f"is empty; it {PATH_HINT}")
    if lowered.startswith(("http://", "https://")):
        if len(value) > LORA_PATH_MAX_CHARS:
            raise LoraFileError(f"a URL may have at most {LORA_PATH_MAX_CHARS} characters")
        if _pickle_name(urllib.parse.urlsplit(value).path):
            raise LoraFileError(CONVERT_HINT)
        return LoraSource("url", value)
    if value.startswith("/files/"):
        if _pickle_name(value):
            raise LoraFileError(CONVERT_HINT)
        return LoraSource("url", value)
    if lowered.startswith("data:"):
        raise LoraFileError(f"data: URIs are not accepted for LoRAs; the path {PATH_HINT}")
    if "://" in value or lowered.startswith(("file:", "ftp:")):
        raise LoraFileError(PATH_HINT)
    if len(value) > LORA_NAME_MAX_CHARS:
        raise LoraFileError(f"a LoRA file name may have at most {LORA_NAME_MAX_CHARS} characters")
    if "/" in value or "\\" in value or ".." in value or not _NAME.match(value):
        raise LoraFileError(
            "a LoRA name must be a plain file name (letters, digits, spaces and ._+=@,()[]-; "
            f"no path separators, no '..'); the path {PATH_HINT}"
        )
    if _pickle_name(value):
        raise LoraFileError(CONVERT_HINT)
    return LoraSource("name", value)


def check_lora_path(value: str) -> str:
    """The API's shape check of a LoRA `path` (a pydantic validator: raises ValueError)."""
    return lora_source(value).value


def find_in_lora_dir(lora_dir: Path, name: str) -> Path | None:
    """The file called `name` (or `name.safetensors`) directly inside `lora_dir`, or None.

    `name` has passed :func:`lora_source`; the resolved file must still lie inside the directory
    (a symlink out of it is refused), and must be a regular file."""
    root = lora_dir.resolve()
    candidates = [name] if name.lower().endswith(".safetensors") else [name, f"{name}.safetensors"]
    for candidate in candidates:
        path = (root / candidate).resolve()
        if not path.is_relative_to(root) or path.parent != root:
            raise LoraFileError(f"LoRA {name!r} points outside the server's LoRA directory")
        if path.is_file():
            return path
    return None


def check_safetensors(path: Path, size: int) -> int:
    """Check that the `size`-byte file at `path` is a safetensors file; return its tensor count.

    The `safetensors` library parses and validates the header (its tensor offsets, dtypes and
    the file's length). Only when it refuses a file does this look at the first bytes, to say what
    the file is instead (a PyTorch pickle or ZIP, an HTML page, JSON, a truncated download) and
    what to do: the library's own message names none of these. The first bytes are never taken
    for magic before the library has refused the file: a valid header length is 8 little-endian
    bytes that may begin with 0x80 or `PK` like a pickle or a ZIP does (1 valid file in 32 was
    refused that way, the trainer's own outputs among them).
    """
    try:
        with safe_open(str(path), framework="numpy") as f:
            count = len(list(f.keys()))
    except (SafetensorError, OSError, ValueError, RecursionError) as exc:
        raise LoraFileError(_not_safetensors(path, size, exc)) from None
    if not count:
        raise LoraFileError("the safetensors file contains no tensors")
    return count


def _not_safetensors(path: Path, size: int, error: Exception) -> str:
    """What a file the safetensors library refused is, from its first bytes, and what to do."""
    with path.open("rb") as f:
        head = f.read(16)
        if head[:4] == b"PK\x03\x04" or (
            head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
        ):
            return f"the file is a PyTorch pickle, not safetensors; {CONVERT_HINT}"
        if len(head) < 8:
            return f"the file is not a safetensors file ({size} bytes is too short)"
        text = head.lstrip()[:1]
        if text == b"<":
            return "the file is not a safetensors file (it looks like an HTML page: check the URL)"
        if text == b"{":
            return "the file is not a safetensors file (it looks like JSON)"
        (length,) = struct.unpack("<Q", head[:8])
        if length < 2 or length > MAX_HEADER_BYTES or 8 + length > size:
            return "the file is not a safetensors file (its first 8 bytes are not a header length)"
        f.seek(8)
        raw = f.read(length)
    described = _described_bytes(raw)
    if described is not None and 8 + length + described != size:
        return (
            f"the safetensors file is truncated or corrupt: its header describes {8 + length + described} "
            f"bytes, the file has {size}"
        )
    if raw.lstrip()[:1] == b"[":
        return "the file is not a safetensors file (its header is not a JSON object)"
    reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
    return f"the safetensors file is corrupt ({reason})"


def _described_bytes(raw: bytes) -> int | None:
    """The data length a header's offsets describe, for the message only (None: no usable offsets).
    Nesting is bounded by Python's recursion limit: a deeply nested header is just 'corrupt'."""
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(header, dict):
        return None
    ends = [
        info["data_offsets"][1]
        for name, info in header.items()
        if name != "__metadata__"
        and isinstance(info, dict)
        and isinstance(info.get("data_offsets"), list)
        and len(info["data_offsets"]) == 2
        and isinstance(info["data_offsets"][1], int)
    ]
    return max(ends) if ends else None


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# a cached file used this recently may be about to load in a job (its own, or another worker's on
# the same data directory): never removed
LORA_CACHE_GRACE_S = 600.0


def prune_lora_cache(directory: Path, max_bytes: int, now: float, grace_s: float = LORA_CACHE_GRACE_S) -> int:
    """Remove the least recently used `*.safetensors` files of `directory` (by mtime: a file is
    touched each time a job uses it) until the rest fit in `max_bytes`, sparing any file used in
    the last `grace_s` seconds. Returns the bytes freed. Files vanishing meanwhile (another
    worker pruning the same directory) are skipped."""
    entries: list[tuple[float, int, Path]] = []
    for path in directory.glob("*.safetensors"):
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        entries.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in entries)
    freed = 0
    for mtime, size, path in sorted(entries):
        if total - freed <= max_bytes:
            break
        if now - mtime < grace_s:
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        freed += size
    return freed
