"""Reading a LoRA file and converting it to diffusers' names, whatever common Wan layout it has.

Formats, detected from the keys (one file may mix them; each key is read by its own family):

- ``wanforge``: our trainer's export (``training/export.py``): original Wan names under
  ``diffusion_model.`` with ``lora_A``/``lora_B`` and ``.alpha``, plus ``wanforge_version`` metadata;
- ``comfy``: the same original Wan names (ComfyUI, ai-toolkit, the Wan repo), ``lora_A``/``lora_B``
  or ``lora_down``/``lora_up``, optional ``.alpha``, with or without ``diffusion_model.``;
- ``diffusers``: diffusers/PEFT names (``transformer.blocks.N.attn1.to_q.lora_A.weight``,
  also under PEFT's ``base_model.model.`` or bare);
- ``musubi``: musubi-tuner / kohya (``lora_unet_blocks_N_self_attn_q.lora_down.weight`` + ``.alpha``);
- ``lightx2v``: any of the above plus full deltas: ``.diff`` (a weight), ``.diff_b`` (a bias),
  ``.diff_m`` (a block's modulation), including the norm layers' deltas.

The low-rank part goes through diffusers' own converter (``_convert_non_diffusers_wan_lora_to_diffusers``),
which folds ``alpha / rank`` into the weights exactly as ``pipe.load_lora_weights`` does. The full
deltas are renamed with diffusers' own checkpoint key map (``convert_wan_transformer_to_diffusers``)
and applied to the base weights by ``adapters.py``: a peft LoRA cannot hold a full-rank weight
delta, and diffusers' loader drops block ``.diff`` and norm deltas (it logs "not handled yet").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_wan_lora_to_diffusers
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
from safetensors import SafetensorError, safe_open

from wanforge.engine.loras import LoraError

LoraFormat = Literal["wanforge", "comfy", "diffusers", "musubi", "lightx2v", "unknown"]

WAN_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
DIFFUSERS_PREFIXES = ("transformer.", "base_model.model.")
MUSUBI_PREFIX = "lora_unet_"

_LOW_RANK = re.compile(
    r"(?P<module>.+)\.(?P<part>lora_A\.weight|lora_B\.weight|lora_down\.weight|lora_up\.weight|lora_B\.bias|alpha)"
)
_PART = {
    "lora_A.weight": "lora_A.weight",
    "lora_down.weight": "lora_A.weight",
    "lora_B.weight": "lora_B.weight",
    "lora_up.weight": "lora_B.weight",
    "lora_B.bias": "lora_B.bias",
    "alpha": "alpha",
}
_DELTA = re.compile(r"(?P<target>.+)\.(?P<kind>diff|diff_b|diff_m)")
# the original Wan parameter a delta adds to: `X.diff` -> X.weight, `X.diff_b` -> X.bias,
# `blocks.N.diff_m` -> blocks.N.modulation (LightX2V's name for the block's modulation table)
_DELTA_PARAM = {"diff": "weight", "diff_b": "bias", "diff_m": "modulation"}
# a bare key (no prefix) in diffusers' names rather than the original Wan names
_DIFFUSERS_NAME = re.compile(r"(^|\.)(attn1|attn2|ffn\.net|condition_embedder|proj_out|scale_shift_table)\.")
# the original Wan modules that diffusers' Wan LoRA converter maps (anything else makes it raise)
_WAN_LORA_MODULE = re.compile(
    r"blocks\.\d+\.(self_attn\.(q|k|v|o)|cross_attn\.(q|k|v|o|k_img|v_img)|ffn\.(0|2))"
    r"|time_projection\.1|head\.head|(text|time)_embedding\.(0|2)|img_emb\.proj\.(1|3)"
)
# musubi-tuner writes the original Wan module names with every "." as "_"
_MUSUBI_MODULE = (
    (re.compile(r"blocks_(\d+)_(self_attn|cross_attn)_(q|k|v|o|k_img|v_img)"), r"blocks.\1.\2.\3"),
    (re.compile(r"blocks_(\d+)_ffn_(0|2)"), r"blocks.\1.ffn.\2"),
    (re.compile(r"(text_embedding|time_embedding)_(0|2)"), r"\1.\2"),
    (re.compile(r"time_projection_1"), "time_projection.1"),
    (re.compile(r"head_head"), "head.head"),
    (re.compile(r"img_emb_proj_(1|3)"), r"img_emb.proj.\1"),
)

Family = Literal["wan", "diffusers", "musubi"]


@dataclass(frozen=True)
class ParsedLora:
    """A file's content in diffusers' names, before it is checked against a model."""

    format: LoraFormat
    # peft LoRA weights, alpha folded in: `blocks.0.attn1.to_q.lora_A.weight` (also `lora_B.bias`)
    lora: dict[str, torch.Tensor]
    # full deltas by the base parameter they add to: `blocks.0.norm2.weight`, `blocks.0.scale_shift_table`
    deltas: dict[str, torch.Tensor]
    # the file's own keys that no converter understands
    unknown: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    # what the file's values say about it, for the prediction's logs (absurd magnitudes)
    warnings: list[str] = field(default_factory=list)


# Largest |value| a sane LoRA tensor holds: trained A/B weights and deltas are far below 1; a file
# above this is kept (a user may mean it) but named in the prediction's notes.
ABSURD_MAGNITUDE = 1e4


def check_values(tensors: Mapping[str, torch.Tensor], name: str) -> list[str]:
    """Refuse (LoraError) a file with a NaN or infinite value: it "completes" with a black video.
    Returns a warning when a value is absurdly large (over :data:`ABSURD_MAGNITUDE`)."""
    not_finite: list[str] = []
    largest, largest_key = 0.0, ""
    for key, value in tensors.items():
        if not value.is_floating_point() or value.numel() == 0:
            continue
        if not bool(torch.isfinite(value).all()):
            not_finite.append(key)
            continue
        peak = float(value.abs().max())
        if peak > largest:
            largest, largest_key = peak, key
    if not_finite:
        raise LoraError(
            f"{name} holds NaN or infinite values in {len(not_finite)} tensors "
            f"({', '.join(not_finite[:3])}{', ...' if len(not_finite) > 3 else ''}): it would make a black "
            "video; re-export it from a run that did not diverge"
        )
    if largest > ABSURD_MAGNITUDE:
        return [f"{name}: values up to {largest:.3g} (in {largest_key}): a diverged or mis-scaled LoRA?"]
    return []


def read_lora(path: Path, name: str) -> ParsedLora:
    """Read ``path`` with safetensors (never unpickled) and convert it; ``name`` is for messages."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118  # safe_open has no __iter__
    except (SafetensorError, OSError, ValueError) as exc:
        raise LoraError(f"{name} is not a readable .safetensors file") from exc
    warnings = check_values(tensors, name)
    parsed = parse_lora(tensors, metadata, name)
    parsed.warnings.extend(warnings)
    return parsed


def _family(key: str) -> tuple[Family, str]:
    for prefix in WAN_PREFIXES:
        if key.startswith(prefix):
            return "wan", key.removeprefix(prefix)
    for prefix in DIFFUSERS_PREFIXES:
        if key.startswith(prefix):
            return "diffusers", key.removeprefix(prefix)
    if key.startswith(MUSUBI_PREFIX):
        return "musubi", key.removeprefix(MUSUBI_PREFIX)
    return ("diffusers" if _DIFFUSERS_NAME.search(key) else "wan"), key


def _musubi_module(module: str) -> str | None:
    for pattern, template in _MUSUBI_MODULE:
        if pattern.fullmatch(module):
            return pattern.sub(template, module)
    return None


@dataclass
class _Split:
    """The file's keys sorted into what each converter takes."""

    # original Wan module -> {"lora_A.weight" | "lora_B.weight" | "alpha": (file key, tensor)}
    wan: dict[str, dict[str, tuple[str, torch.Tensor]]] = field(default_factory=dict)
    diffusers: dict[str, dict[str, tuple[str, torch.Tensor]]] = field(default_factory=dict)
    wan_deltas: dict[str, torch.Tensor] = field(default_factory=dict)  # original Wan parameter names
    diffusers_deltas: dict[str, torch.Tensor] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    families: set[Family] = field(default_factory=set)


def _split(tensors: Mapping[str, torch.Tensor]) -> _Split:
    out = _Split()
    for key, value in tensors.items():
        family, rest = _family(key)
        delta = _DELTA.fullmatch(rest)
        if delta is not None and family != "musubi":
            param = f"{delta['target']}.{_DELTA_PARAM[delta['kind']]}"
            (out.wan_deltas if family == "wan" else out.diffusers_deltas)[param] = value
            out.families.add(family)
            continue
        low_rank = _LOW_RANK.fullmatch(rest)
        if low_rank is None:
            out.unknown.append(key)
            continue
        module, part = low_rank["module"], _PART[low_rank["part"]]
        if family == "musubi":
            wan_module = _musubi_module(module)
            if wan_module is None:
                out.unknown.append(key)
                continue
            module, family = wan_module, "wan"
            out.families.add("musubi")
        if family == "wan" and (part == "lora_B.bias" or not _WAN_LORA_MODULE.fullmatch(module)):
            out.unknown.append(key)
            continue
        (out.wan if family == "wan" else out.diffusers).setdefault(module, {})[part] = (key, value)
        out.families.add(family)
    return out


def _complete_pairs(
    groups: dict[str, dict[str, tuple[str, torch.Tensor]]], unknown: list[str]
) -> dict[str, dict[str, tuple[str, torch.Tensor]]]:
    """Keep the modules that have both halves; the keys of the others go to ``unknown``."""
    kept: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}
    for module, parts in groups.items():
        if "lora_A.weight" in parts and "lora_B.weight" in parts:
            kept[module] = parts
        else:
            unknown.extend(key for key, _ in parts.values())
    return kept


def _convert_wan(
    groups: dict[str, dict[str, tuple[str, torch.Tensor]]], name: str
) -> dict[str, torch.Tensor]:
    """Original Wan names -> diffusers names through diffusers' own converter."""
    if not groups:
        return {}
    state = {
        f"diffusion_model.{module}.{part}": value
        for module, parts in groups.items()
        for part, (_, value) in parts.items()
    }
    try:
        converted = _convert_non_diffusers_wan_lora_to_diffusers(state)
    except (KeyError, ValueError, RuntimeError, IndexError) as exc:
        raise LoraError(
            f"{name}: its Wan-named LoRA keys could not be converted ({type(exc).__name__})"
        ) from exc
    return {key.removeprefix("transformer."): value for key, value in converted.items()}


def _convert_diffusers(groups: dict[str, dict[str, tuple[str, torch.Tensor]]]) -> dict[str, torch.Tensor]:
    """diffusers names as they are; an ``.alpha`` (kohya-style, which peft has no key for) is
    folded into ``lora_A`` as ``alpha / rank``, the scale the LoRA was trained with."""
    out: dict[str, torch.Tensor] = {}
    for module, parts in groups.items():
        down = parts["lora_A.weight"][1]
        if "alpha" in parts:
            down = down * (float(parts["alpha"][1].item()) / down.shape[0])
        out[f"{module}.lora_A.weight"] = down
        out[f"{module}.lora_B.weight"] = parts["lora_B.weight"][1]
        if "lora_B.bias" in parts:
            out[f"{module}.lora_B.bias"] = parts["lora_B.bias"][1]
    return out


def _detect(split: _Split, metadata: Mapping[str, str]) -> LoraFormat:
    if split.wan_deltas or split.diffusers_deltas:
        return "lightx2v"
    if "musubi" in split.families:
        return "musubi"
    if "wan" in split.families:
        return "wanforge" if "wanforge_version" in metadata else "comfy"
    if "diffusers" in split.families:
        return "diffusers"
    return "unknown"


def parse_lora(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], name: str) -> ParsedLora:
    """Sort the keys by format and convert them to diffusers' names (see the module docstring)."""
    split = _split(tensors)
    unknown = list(split.unknown)
    wan = _complete_pairs(split.wan, unknown)
    # diffusers' converter maps k_img/v_img only when a file has both (Wan 2.1 I2V LoRAs)
    has_img = any(m.endswith(".k_img") for m in wan) and any(m.endswith(".v_img") for m in wan)
    # ... and needs at least one block (it ranges over the block numbers it finds)
    has_blocks = any(m.startswith("blocks.") for m in wan)
    for module in [m for m in wan if (m.endswith("_img") and not has_img) or not has_blocks]:
        unknown.extend(key for key, _ in wan.pop(module).values())
    lora = {**_convert_wan(wan, name), **_convert_diffusers(_complete_pairs(split.diffusers, unknown))}
    deltas = dict(split.diffusers_deltas)
    if split.wan_deltas:
        deltas.update(convert_wan_transformer_to_diffusers(dict(split.wan_deltas)))
    return ParsedLora(
        format=_detect(split, metadata),
        lora=lora,
        deltas=deltas,
        unknown=sorted(unknown),
        keys=sorted(tensors),
    )
