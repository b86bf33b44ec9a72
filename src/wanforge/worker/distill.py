"""The ultra-fast models' distill LoRAs: the operator's two files as engine LoRA requests.

Each file is hashed once per worker (keyed by its path, size and modification time) and becomes
one :class:`LoraRequest` for its expert at scale 1.0, so the engine's adapter cache loads it once
and switches it on per request like any other LoRA; user LoRAs are simply added after it.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType

from wanforge.catalog import ULTRA_FAST_HINT
from wanforge.config import Settings
from wanforge.engine.loras import Expert, LoraRequest
from wanforge.vocabulary import ErrorCode
from wanforge.worker.context import TaskError

# what messages and the prediction's `adapters` call them (never the server path)
DISTILL_NAMES: MappingProxyType[Expert, str] = MappingProxyType(
    {"high_noise": "ultra-fast distill LoRA (high noise)", "low_noise": "ultra-fast distill LoRA (low noise)"}
)
_SETTING: MappingProxyType[Expert, str] = MappingProxyType(
    {"high_noise": "WANFORGE_ULTRA_FAST_HIGH_NOISE_LORA", "low_noise": "WANFORGE_ULTRA_FAST_LOW_NOISE_LORA"}
)


@lru_cache(maxsize=8)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def distill_loras(settings: Settings, model_id: str) -> tuple[LoraRequest, LoraRequest]:
    """The high- and low-noise distill LoRAs; 5003 when this worker has none or cannot read one."""
    files: dict[Expert, Path | None] = {
        "high_noise": settings.ultra_fast_high_noise_lora,
        "low_noise": settings.ultra_fast_low_noise_lora,
    }
    requests = []
    for expert, path in files.items():
        if path is None:
            raise TaskError(ErrorCode.UNAVAILABLE, f"model '{model_id}' {ULTRA_FAST_HINT} (on this worker)")
        try:
            stat = path.stat()
            sha256 = _sha256(path, stat.st_size, stat.st_mtime_ns)
        except OSError as exc:
            raise TaskError(
                ErrorCode.UNAVAILABLE,
                f"model '{model_id}' is not available: this worker cannot read its {DISTILL_NAMES[expert]} "
                f"({_SETTING[expert]}: {exc.strerror or type(exc).__name__})",
            ) from exc
        requests.append(
            LoraRequest(
                file=path, sha256=sha256, scale=1.0, experts=frozenset({expert}), name=DISTILL_NAMES[expert]
            )
        )
    return requests[0], requests[1]
