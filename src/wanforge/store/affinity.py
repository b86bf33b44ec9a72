"""LoRA affinity: which LoRAs a queued job names, for a worker that holds some of them loaded.

A worker keeps recently used LoRA adapters loaded (`engine/adapters.py`); a job that uses one of
them skips its download and load. At claim time a worker knows of a queued job only its input,
so a LoRA is matched by the identity its `path` gives: the string as given, stripped, with a
URL's scheme and host lower-cased (`lora_identity`). The identities are written with the job
(`predictions.lora_ids`), so `claim_next` reads a few short columns, never the inputs.

Matching by path is a hint, not a promise: the same file under two URLs is not matched, and a URL
whose content changed is matched to the worker that held the old content (which then loads the
new file, as any worker would). What runs is always decided by the file's content hash.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# the three LoRA lists of the LoRA models' inputs (catalog.I2VLoraInput)
LORA_LISTS = ("loras", "high_noise_loras", "low_noise_loras")
# how many of the oldest runnable jobs a claim looks at for one using a held LoRA
AFFINITY_WINDOW = 32


def lora_identity(path: str) -> str:
    """What a LoRA `path` is matched by: stripped; an http(s) URL's scheme and host lower-cased."""
    path = path.strip()
    parts = urllib.parse.urlsplit(path)
    if parts.scheme.lower() in ("http", "https") and parts.netloc:
        return urllib.parse.urlunsplit(
            parts._replace(scheme=parts.scheme.lower(), netloc=parts.netloc.lower())
        )
    return path


def input_lora_ids(inp: Mapping[str, Any]) -> list[str]:
    """The identities of the LoRAs a job's input names, sorted, each once (none for other inputs)."""
    found: set[str] = set()
    for name in LORA_LISTS:
        entries = inp.get(name)
        if not isinstance(entries, list):
            continue
        for entry in entries:
            path = entry.get("path") if isinstance(entry, Mapping) else None
            if isinstance(path, str) and path.strip():
                found.add(lora_identity(path))
    return sorted(found)


@dataclass(frozen=True)
class Queued:
    """One of the oldest runnable jobs, as a claim sees it."""

    id: str
    created_at: datetime
    lora_ids: Sequence[str] | None


def preferred(
    queued: Iterable[Queued], prefer: frozenset[str], affinity_wait_s: float, clock: datetime
) -> str | None:
    """The job to take out of turn: the oldest of `queued` (oldest first) that names a LoRA in
    `prefer`; None for strict FIFO, which is also the answer when the oldest job has waited longer
    than `affinity_wait_s` by `clock` (the database's), so that no job waits much past it."""
    jobs = list(queued)
    if not jobs or not prefer or affinity_wait_s <= 0:
        return None
    # in seconds: a wait a timedelta cannot hold (inf, as the setting allows) is affinity without aging
    if (clock - jobs[0].created_at).total_seconds() > affinity_wait_s:
        return None
    return next((job.id for job in jobs if prefer.intersection(job.lora_ids or ())), None)
