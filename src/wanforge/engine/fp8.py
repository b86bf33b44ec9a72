"""FP8 of the experts: which mode this machine runs, and torchao float8 compute for their linears.

``WANFORGE_FP8`` picks one of:

- ``off``: the experts' weights and matmuls in the checkpoint dtype (bf16 on CUDA).
- ``storage``: diffusers' layerwise casting keeps the weights in float8 (e4m3) and upcasts one
  layer at a time (memory only; see :mod:`wanforge.engine.speed`). Runs anywhere.
- ``compute``: torchao's ``Float8DynamicActivationFloat8WeightConfig`` (per-row scales) turns the
  transformer blocks' linear layers into float8 x float8 matmuls (``torch._scaled_mm``): half the
  weight memory and faster matmuls. torchao needs a CUDA GPU of compute capability 8.9 or newer
  (Ada, Hopper, Blackwell); it is fastest under ``WANFORGE_COMPILE=regional``, which fuses the
  activation quantization into the matmul's neighbours.
- ``auto``: ``compute`` where it can run, else ``storage`` on any other CUDA GPU, else ``off``
  (on the CPU fp8 storage saves nothing that matters and costs time). Under
  ``WANFORGE_COMPILE=regional``, whose full-graph blocks cannot capture diffusers' casting hooks,
  ``auto`` picks ``off`` instead of ``storage``.

Which linears ``compute`` converts (:func:`fp8_linear_filter`), as LightX2V's fp8 Wan and
diffusers' torchao recipes do: only ``nn.Linear`` layers inside ``blocks.*`` (attention q/k/v/out,
cross-attention, feed-forward), and of those only the ones whose in and out features are
multiples of 16 (``_scaled_mm``'s constraint). The patch embedding, the condition embedders
(time, text, image), the norms, the scale-shift tables and the final ``proj_out`` stay in the
checkpoint dtype: they are small, and the output head and embeddings are where fp8 error shows.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch

Fp8Choice = Literal["off", "storage", "compute", "auto"]
Fp8Mode = Literal["off", "storage", "compute"]
FP8_CHOICES: tuple[Fp8Choice, ...] = get_args(Fp8Choice)
SETTING = "WANFORGE_FP8"
# torchao's float8 kernels (torch._scaled_mm) need sm89+ (torchao's own is_sm_at_least_89)
MIN_CAPABILITY = (8, 9)
# _scaled_mm needs both matrix dimensions divisible by 16
FP8_ALIGNMENT = 16


@dataclass(frozen=True)
class Fp8Platform:
    """What FP8 compute needs: a CUDA device of some compute capability, and torchao installed."""

    cuda: bool
    capability: tuple[int, int] | None = None
    torchao: bool = False

    def describe(self) -> str:
        if not self.cuda:
            return "this worker runs on the CPU"
        major, minor = self.capability or (0, 0)
        gpu = f"this GPU is sm{major}{minor}"
        return gpu if self.torchao else f"{gpu} and torchao is not installed"

    @property
    def compute_ok(self) -> bool:
        return self.cuda and self.torchao and (self.capability or (0, 0)) >= MIN_CAPABILITY


def probe(device: torch.device) -> Fp8Platform:
    """The device's FP8 facts; torchao is looked up without importing it (its import is slow and noisy)."""
    torchao = importlib.util.find_spec("torchao") is not None
    if device.type != "cuda":
        return Fp8Platform(cuda=False, torchao=torchao)
    return Fp8Platform(cuda=True, capability=torch.cuda.get_device_capability(device), torchao=torchao)


def choose_fp8(requested: str, platform: Fp8Platform, *, compiled: bool = False) -> Fp8Mode:
    """The FP8 mode to run: ``auto`` picks (no ``storage`` under regional compile); ``compute``
    where it cannot run is refused (ValueError)."""
    if requested not in FP8_CHOICES:
        raise ValueError(f"{SETTING} must be one of {', '.join(FP8_CHOICES)}, got {requested!r}")
    if requested == "auto":
        if platform.compute_ok:
            return "compute"
        return "storage" if platform.cuda and not compiled else "off"
    if requested == "compute" and not platform.compute_ok:
        raise ValueError(
            f"{SETTING}=compute needs a CUDA GPU of compute capability "
            f"{MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} or newer (Ada, Hopper, Blackwell) and torchao "
            f"(pip install 'wanforge[fp8]'); {platform.describe()}. Use {SETTING}=storage (fp8 weights, "
            "bf16 matmuls: memory only) or off"
        )
    mode: Fp8Mode = "off" if requested == "off" else "storage" if requested == "storage" else "compute"
    return mode


def fp8_linear_filter(module: torch.nn.Module, fqn: str) -> bool:
    """torchao ``filter_fn``: a block's linear layer whose shape the float8 matmul takes. Under a
    peft LoRA wrapper (the compile slot) that is the wrapped ``base_layer``, never the LoRA's own
    A and B (``.lora_A.<adapter>``): the slot is rewritten per request and stays in bf16."""
    return (
        isinstance(module, torch.nn.Linear)
        and fqn.startswith("blocks.")
        and ".lora_" not in fqn
        and module.in_features % FP8_ALIGNMENT == 0
        and module.out_features % FP8_ALIGNMENT == 0
    )


def fp8_linears(expert: torch.nn.Module) -> list[str]:
    """The names of the linear layers of ``expert`` that ``compute`` converts."""
    return [name for name, module in expert.named_modules() if fp8_linear_filter(module, name)]


def apply_fp8_compute(experts: Sequence[torch.nn.Module], config: Any = None) -> None:
    """torchao float8 (dynamic per-row activation scales, per-row weight scales) on the filtered
    linears of each expert, in place, where the weights already are (on the GPU). ``config``
    replaces the float8 config (tests pass one that quantizes on the CPU, to run the same path)."""
    logging.getLogger("torchao").setLevel(logging.ERROR)  # its optional kernels' load failures
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    for expert in experts:
        quantize_(
            expert,
            config if config is not None else Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()),
            filter_fn=fp8_linear_filter,
        )
