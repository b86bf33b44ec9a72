"""What a request asks of LoRAs: the seam between the worker (which fetches the files) and the engine.

`Expert` names the two Wan 2.2 experts the way the trainer does: ``high_noise`` is the pipeline's
``transformer`` (early, noisy steps), ``low_noise`` its ``transformer_2``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal

Expert = Literal["high_noise", "low_noise"]
BOTH: frozenset[Expert] = frozenset({"high_noise", "low_noise"})
EXPERT_ORDER: tuple[Expert, ...] = ("high_noise", "low_noise")

# The pipeline attribute that holds each expert.
TRANSFORMER_OF: MappingProxyType[Expert, str] = MappingProxyType(
    {"high_noise": "transformer", "low_noise": "transformer_2"}
)


@dataclass(frozen=True)
class LoraRequest:
    """One LoRA as a request asks for it, already a local, size-checked .safetensors file."""

    file: Path  # local file the worker fetched / found
    sha256: str  # hex content hash: the adapter cache key
    scale: float  # 0..4 (validated at the API)
    experts: frozenset[Expert]  # BOTH for `loras`; one expert for high_noise_loras / low_noise_loras
    name: str  # what the client called it (for messages and logs; no server paths)


class LoraError(ValueError):
    """The file is not a usable Wan 2.2 I2V LoRA (unknown format, keys matching no layer, shapes
    that do not fit). The worker answers 1401 with str(error); the message lists at most 10 keys
    and never names a server path."""


MAX_LISTED_KEYS = 10


def list_keys(keys: list[str], limit: int = MAX_LISTED_KEYS) -> str:
    """``a, b, c`` for at most ``limit`` keys, with ``(+N more)`` when there are more."""
    shown = ", ".join(keys[:limit])
    return f"{shown} (+{len(keys) - limit} more)" if len(keys) > limit else shown
