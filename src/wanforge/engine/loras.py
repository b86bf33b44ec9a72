"""LoRA adapters on the resident model (the seam between the worker and the engine).

This branch holds only the interface the worker calls; the adapter loading lives beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Expert = Literal["high_noise", "low_noise"]  # transformer = high_noise, transformer_2 = low_noise
BOTH: frozenset[Expert] = frozenset({"high_noise", "low_noise"})


@dataclass(frozen=True)
class LoraRequest:
    """One LoRA as a request asks for it, already a local, size-checked .safetensors file."""

    file: Path  # local file the worker fetched / found (F guarantees it exists)
    sha256: str  # hex content hash: the adapter cache key
    scale: float  # 0..4 (validated at the API)
    experts: frozenset[Expert]  # BOTH for `loras`; one expert for high_noise_loras / low_noise_loras
    name: str  # what the client called it (for messages and logs; no server paths)


class LoraError(ValueError):
    """The file is not a usable Wan 2.2 I2V LoRA (unknown format, keys matching no layer, shapes
    that do not fit). The worker answers 1401 with str(error); the message lists at most 10 keys
    and never names a server path."""
