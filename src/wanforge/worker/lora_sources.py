"""Where a request's LoRAs come from: each `{path, scale}` entry to a local, checked safetensors file.

A `path` is one of (see :mod:`wanforge.media.lora_files`):

- an http(s) URL, fetched under the image fetch rules (address checks, redirects, streaming to
  disk) with its own limits `WANFORGE_MAX_LORA_BYTES` and `WANFORGE_LORA_TIMEOUT_S`;
- a URL of this server's own files (`/files/...`: an upload, a trainer output), copied from storage;
- the name of a file in the operator's `WANFORGE_LORA_DIR`, read where it lies.

Downloaded and copied files are kept under `{data}/loras/{sha256}.safetensors`: one file per
content, whatever URL it came by. A URL is fetched once per job (the same path in two lists is one
download) but again in the next job, since what a URL serves may change; the content hash is the
cache key the engine's adapter cache uses, so a changed file is never mistaken for the old one.
The kept files are bounded by `WANFORGE_LORA_CACHE_GB`, least recently used removed first.

A failed download is 1402 ("cannot read loras[0].path: ..."); a file that is not safetensors, a
pickle, or a name the LoRA directory does not hold is 1401 naming the field.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from wanforge.catalog import I2VLoraInput, LoraEntry
from wanforge.engine.loras import BOTH, Expert, LoraRequest
from wanforge.media.errors import TooLarge
from wanforge.media.lora_files import (
    LoraFileError,
    check_safetensors,
    find_in_lora_dir,
    lora_source,
    prune_lora_cache,
    sha256_file,
)
from wanforge.vocabulary import ErrorCode
from wanforge.worker.context import JobContext, TaskError

LIMIT_SETTING = "WANFORGE_MAX_LORA_BYTES"
TIMEOUT_SETTING = "WANFORGE_LORA_TIMEOUT_S"
LISTS: tuple[tuple[str, frozenset[Expert]], ...] = (
    ("loras", BOTH),
    ("high_noise_loras", frozenset({"high_noise"})),
    ("low_noise_loras", frozenset({"low_noise"})),
)


@dataclass(frozen=True)
class ResolvedLora:
    field: str  # the request's entry, e.g. "high_noise_loras[0]"
    request: LoraRequest


@dataclass
class ResolvedLoras:
    loras: list[ResolvedLora] = field(default_factory=list)
    fetch_s: float = 0.0

    @property
    def requests(self) -> tuple[LoraRequest, ...]:
        return tuple(r.request for r in self.loras)

    def fields_named_in(self, message: str) -> list[str]:
        """The entries whose LoRA name occurs in `message` (an engine error about one of them)."""
        return [r.field for r in self.loras if r.request.name and r.request.name in message]


def requested(inp: I2VLoraInput) -> list[tuple[str, LoraEntry, frozenset[Expert]]]:
    """Every entry of the three lists, in order, with its field name and its experts."""
    return [
        (f"{name}[{i}]", entry, experts)
        for name, experts in LISTS
        for i, entry in enumerate(getattr(inp, name))
    ]


def display_name(path: str) -> str:
    """What a client calls a LoRA: the file name of a URL (unquoted), or the name itself."""
    parts = urllib.parse.urlsplit(path.strip())
    if parts.scheme or path.startswith("/"):
        last = urllib.parse.unquote(parts.path.rstrip("/").rsplit("/", 1)[-1])
        return last or parts.hostname or path
    return path.strip()


def resolve_loras(ctx: JobContext, inp: I2VLoraInput) -> ResolvedLoras:
    """Fetch or find every LoRA of the request; each file is checked to be safetensors."""
    started = time.monotonic()
    found: dict[str, tuple[Path, str]] = {}  # path -> (file, sha256): one fetch per path per job
    out = ResolvedLoras()
    for name, entry, experts in requested(inp):
        path = entry.path.strip()
        if path not in found:
            found[path] = _resolve(ctx, f"{name}.path", path)
        file, sha = found[path]
        request = LoraRequest(
            file=file, sha256=sha, scale=entry.scale, experts=experts, name=display_name(path)
        )
        out.loras.append(ResolvedLora(name, request))
    out.fetch_s = time.monotonic() - started
    return out


def _invalid(field: str, message: str) -> TaskError:
    return TaskError(ErrorCode.INVALID_PARAMETER, f"invalid parameter {field}: {message}")


def _resolve(ctx: JobContext, field: str, path: str) -> tuple[Path, str]:
    try:
        source = lora_source(path)
    except LoraFileError as exc:  # the API checks this too; a stored input is re-checked
        raise _invalid(field, str(exc)) from exc
    if source.kind == "name":
        return _from_lora_dir(ctx, field, source.value)
    return _download(ctx, field, source.value)


def _from_lora_dir(ctx: JobContext, field: str, name: str) -> tuple[Path, str]:
    lora_dir = ctx.settings.lora_dir
    if lora_dir is None:
        raise _invalid(
            field,
            f"{name!r} is not a URL, and this server has no LoRA directory to find it in "
            "(the operator sets WANFORGE_LORA_DIR)",
        )
    try:
        file = find_in_lora_dir(lora_dir, name)
    except LoraFileError as exc:
        raise _invalid(field, str(exc)) from exc
    if file is None:
        raise _invalid(field, f"no LoRA named {name!r} in the server's LoRA directory")
    size = file.stat().st_size
    if size > ctx.settings.max_lora_bytes:
        too_large = TooLarge(
            f"LoRA {name!r}", ctx.settings.max_lora_bytes, size, hint=f"{LIMIT_SETTING} sets the limit"
        )
        raise _invalid(field, str(too_large))
    _check(field, file, size)
    return file, sha256_file(file)


def _download(ctx: JobContext, field: str, url: str) -> tuple[Path, str]:
    """Fetch (or copy from storage) into the job directory, check, then keep it by content."""
    ctx.job_dir.mkdir(parents=True, exist_ok=True)
    partial = ctx.job_dir / f"lora-{secrets.token_hex(6)}.safetensors"
    ctx.fetch_to_file(
        url,
        field,
        partial,
        max_bytes=ctx.settings.max_lora_bytes,
        limit_setting=LIMIT_SETTING,
        timeout_s=ctx.settings.lora_timeout_s,
        timeout_setting=TIMEOUT_SETTING,
    )
    try:
        _check(field, partial, partial.stat().st_size)
        sha = sha256_file(partial)
        cache = ctx.settings.lora_cache_dir
        cache.mkdir(parents=True, exist_ok=True)
        kept = cache / f"{sha}.safetensors"
        if kept.exists():  # the same content came before, by this URL or another
            os.utime(kept)  # used now: the last to go when the cache is pruned
            return kept, sha
        try:
            os.replace(partial, kept)
        except OSError:  # the job and cache directories on different file systems
            shutil.copyfile(partial, kept.with_name(f".{kept.name}.part"))
            os.replace(kept.with_name(f".{kept.name}.part"), kept)
        os.utime(kept)
        prune_lora_cache(cache, int(ctx.settings.lora_cache_gb * 1024**3), time.time())
        return kept, sha
    finally:
        partial.unlink(missing_ok=True)


def _check(field: str, file: Path, size: int) -> None:
    try:
        check_safetensors(file, size)
    except LoraFileError as exc:
        raise _invalid(field, str(exc)) from exc
