"""LoRA files for the engine's LoRA tests: random weights on the demo experts, written in every format."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from wanforge.engine.demo import build_transformer
from wanforge.engine.loras import BOTH, Expert, LoraRequest
from wanforge.training.export import LoraInfo, export_lora, to_wan_state_dict
from wanforge.training.lora import add_lora, lora_state_dict

RANK = 4
ALPHA = 2.0  # alpha / rank = 0.5: a power of two, so folding it into A is exact in every format


def random_lora(seed: int, rank: int = RANK, std: float = 0.5) -> dict[str, torch.Tensor]:
    """A LoRA on every demo target (peft names, `blocks.0.attn1.to_q.lora_A.weight`), float32."""
    model = build_transformer()
    add_lora(model, rank=rank, alpha=ALPHA, generator=torch.Generator().manual_seed(seed))
    state = lora_state_dict(model)
    gen = torch.Generator().manual_seed(seed + 1)
    return {
        k: (torch.randn(v.shape, generator=gen) * std if ".lora_B." in k else v.float())
        for k, v in state.items()
    }


def write_wanforge(lora: Mapping[str, torch.Tensor], path: Path, expert: Expert = "high_noise") -> Path:
    info = LoraInfo(expert, "p3r5on", RANK, ALPHA, 5, 1e-4, (0.0, 1.0), "wanforge-demo")
    return export_lora(lora, path, info, dtype=torch.float32)


def _wan(lora: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return to_wan_state_dict(lora, ALPHA, dtype=torch.float32)


def write_diffusers(lora: Mapping[str, torch.Tensor], path: Path) -> Path:
    """diffusers/PEFT names, alpha / rank folded into A (the format has no alpha)."""
    scale = ALPHA / RANK
    save_file({f"transformer.{k}": (v * scale if ".lora_A." in k else v) for k, v in lora.items()}, str(path))
    return path


def write_comfy_ab(lora: Mapping[str, torch.Tensor], path: Path) -> Path:
    """Original Wan names, lora_A/lora_B, no alpha (folded into A)."""
    scale = ALPHA / RANK
    wan = _wan(lora)
    out = {k: (v * scale if ".lora_A." in k else v) for k, v in wan.items() if not k.endswith(".alpha")}
    save_file(out, str(path))
    return path


def write_comfy_down_up(
    lora: Mapping[str, torch.Tensor], path: Path, prefix: str = "diffusion_model."
) -> Path:
    """Original Wan names, lora_down/lora_up + alpha."""
    out = {}
    for k, v in _wan(lora).items():
        k = k.replace(".lora_A.", ".lora_down.").replace(".lora_B.", ".lora_up.")
        out[prefix + k.removeprefix("diffusion_model.")] = v
    save_file(out, str(path))
    return path


def wan_to_musubi(wan: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original Wan names (`diffusion_model.blocks.0.self_attn.q.lora_A.weight`, `.alpha`), as
    wanforge exports them, renamed the musubi-tuner way: `lora_unet_blocks_0_self_attn_q.lora_down.weight`."""
    out = {}
    part = {"lora_A.weight": "lora_down.weight", "lora_B.weight": "lora_up.weight", "alpha": "alpha"}
    for k, v in wan.items():
        match = re.fullmatch(r"diffusion_model\.(.+?)\.(lora_A\.weight|lora_B\.weight|alpha)", k)
        assert match is not None, k
        out[f"lora_unet_{match.group(1).replace('.', '_')}.{part[match.group(2)]}"] = v
    return out


def to_musubi(lora: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """musubi-tuner names for a peft-named LoRA."""
    return wan_to_musubi(_wan(lora))


def write_musubi(lora: Mapping[str, torch.Tensor], path: Path) -> Path:
    save_file(to_musubi(lora), str(path))
    return path


def write_tensors(tensors: Mapping[str, torch.Tensor], path: Path) -> Path:
    save_file(dict(tensors), str(path))
    return path


def request(
    path: Path, scale: float = 1.0, experts: frozenset[Expert] = BOTH, name: str | None = None
) -> LoraRequest:
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return LoraRequest(file=path, sha256=sha, scale=scale, experts=experts, name=name or path.name)


def high(path: Path, scale: float = 1.0) -> LoraRequest:
    return request(path, scale, frozenset({"high_noise"}))


def low(path: Path, scale: float = 1.0) -> LoraRequest:
    return request(path, scale, frozenset({"low_noise"}))
