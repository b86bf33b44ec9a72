"""Write a trained expert's LoRA as a `.safetensors` file in the original Wan naming.

Keys are `diffusion_model.blocks.{i}.{self_attn|cross_attn}.{q|k|v|o|k_img|v_img}` and
`diffusion_model.blocks.{i}.ffn.{0|2}`, each with `.lora_A.weight`, `.lora_B.weight` and
`.alpha`: the layout ComfyUI loads (LoraLoaderModelOnly) and that diffusers converts with
`_convert_non_diffusers_wan_lora_to_diffusers`. diffusers folds `alpha / rank` into the weights
on load, and peft scales by `lora_alpha / rank` in training, so writing the raw A and B with
`alpha = lora_alpha` gives the same adapter in both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save

import wanforge
from wanforge.media.atomic import atomic_write
from wanforge.training.lora import BLOCK_TARGETS
from wanforge.training.timesteps import Expert

WAN_PREFIX = "diffusion_model."

_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")
_LORA_KEY = re.compile(r"(.+)\.(lora_A|lora_B)\.weight")


def wan_module_name(diffusers_name: str) -> str:
    """`blocks.3.attn1.to_out.0` -> `blocks.3.self_attn.o`."""
    match = _BLOCK.fullmatch(diffusers_name)
    if match is None or match.group(2) not in BLOCK_TARGETS:
        raise ValueError(f"no Wan name for module {diffusers_name!r}")
    return f"blocks.{match.group(1)}.{BLOCK_TARGETS[match.group(2)]}"


def to_wan_state_dict(
    lora: Mapping[str, torch.Tensor], alpha: float, dtype: torch.dtype = torch.bfloat16
) -> dict[str, torch.Tensor]:
    """peft/diffusers LoRA weights (`blocks.0.attn1.to_q.lora_A.weight`) -> Wan keys with alphas."""
    out: dict[str, torch.Tensor] = {}
    for key, value in lora.items():
        match = _LORA_KEY.fullmatch(key)
        if match is None:
            raise ValueError(f"not a LoRA weight: {key!r}")
        module = WAN_PREFIX + wan_module_name(match.group(1))
        out[f"{module}.{match.group(2)}.weight"] = value.detach().to("cpu", dtype, copy=True).contiguous()
        out[f"{module}.alpha"] = torch.tensor(float(alpha), dtype=torch.float32)
    return dict(sorted(out.items()))


@dataclass(frozen=True)
class LoraInfo:
    """What the exported file says about itself (safetensors metadata, all strings)."""

    expert: Expert
    trigger_word: str
    rank: int
    alpha: float
    steps: int
    learning_rate: float
    timestep_range: tuple[float, float]
    base_model: str
    dataset: Mapping[str, Any] = field(default_factory=dict)

    def metadata(self) -> dict[str, str]:
        return {
            "format": "pt",
            "wanforge_version": wanforge.__version__,
            "base_model": self.base_model,
            "expert": self.expert,
            "trigger_word": self.trigger_word,
            "lora_rank": str(self.rank),
            "lora_alpha": repr(float(self.alpha)),
            "steps": str(self.steps),
            "learning_rate": repr(float(self.learning_rate)),
            "timestep_range": json.dumps([float(x) for x in self.timestep_range]),
            "dataset": json.dumps(dict(self.dataset), sort_keys=True, default=str),
            # the kohya-style names that LoRA browsers show
            "ss_network_dim": str(self.rank),
            "ss_network_alpha": repr(float(self.alpha)),
        }


def export_lora(
    lora: Mapping[str, torch.Tensor],
    path: Path,
    info: LoraInfo,
    dtype: torch.dtype = torch.bfloat16,
) -> Path:
    """Write the file atomically (temporary name, then rename) and return its path."""
    tensors = to_wan_state_dict(lora, info.alpha, dtype)
    with atomic_write(path) as f:
        f.write(save(tensors, metadata=info.metadata()))
    return path


def lora_file_name(stem: str, expert: Expert) -> str:
    return f"{stem}_{expert}.safetensors"
