"""The trainer's memory options: LoRA compute dtype, fp8 storage of the frozen base, activation offload.

Each option changes how an expert is held while it trains, never what is trained; `ExpertTrainer`
applies them in `activate` and undoes them in `deactivate`, so the served model is left as found.

- ``lora_compute="base"`` (default): the LoRA's A and B weights stay float32 parameters (the
  master copies AdamW updates, with float32 state), but each LoRA'd linear computes its LoRA
  branch in the base's dtype (bf16 on a GPU) by casting the weights, not the input. peft casts the
  *input* to the LoRA weights' dtype (`LoraLayer._cast_input_dtype`), and that float32 copy of
  every LoRA'd linear's input (one per linear: q, k and v each make their own) is what autograd
  keeps for backward. Cast the weights instead, and the LoRA branch saves the bf16 input tensor
  itself: shared by the linears that read it, half the bytes where nothing else keeps it and none
  where something does, plus a rank-wide bf16 intermediate. peft has no option for this (its `autocast_adapter_dtype` only
  chooses the dtype the adapter is *stored* in), and `torch.autocast` around the forward would also
  recast the modules diffusers keeps in float32 (the time embedder, the norms), so it is done here,
  by giving each LoRA A/B linear a forward that casts its weight to the input's dtype.
- ``fp8_base``: diffusers' layerwise casting stores the frozen base linears of the blocks in
  float8_e4m3fn and upcasts one layer at a time to compute in bf16; its default skip list already
  leaves the peft LoRA layers, norms, embeddings and the output projection alone. It disables
  peft's input casting, so it needs ``lora_compute="base"``. diffusers cannot undo it ("the
  model should be re-initialized"), so `Fp8Base.restore` puts the original tensors back.
- ``offload="activations"``: `torch.autograd.graph.save_on_cpu` moves every tensor saved for
  backward to (pinned) host memory and brings it back in backward: exact, paid for in PCIe
  traffic. Block swap of the weights (diffusers' group offloading) is not offered: its hooks move
  weights back to the CPU after each block's forward, while the tensors saved for backward still
  refer to them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from diffusers.hooks.hooks import HookRegistry
from peft.tuners.lora import LoraLayer

LoraCompute = Literal["base", "float32"]
Offload = Literal["none", "activations"]
Checkpointing = Literal["auto", "on", "off"]
FP8_STORAGE = torch.float8_e4m3fn
_DIFFUSERS_HOOKS = ("peft_autocast_disable", "layerwise_casting")


@dataclass(frozen=True)
class MemoryOptions:
    """How an expert is held while it trains (module docstring; docs/training.md, "Memory")."""

    lora_compute: LoraCompute = "base"
    fp8_base: bool = False
    offload: Offload = "none"

    def __post_init__(self) -> None:
        if self.fp8_base and self.lora_compute != "base":
            raise ValueError("fp8_base needs lora_compute='base' (diffusers turns off peft's input cast)")


class _ComputeDtypeLinear(torch.nn.Linear):
    """A LoRA A or B linear that computes in its input's dtype: the float32 weight is cast on the
    way in (the cast's backward hands a float32 gradient to the float32 parameter)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(input.dtype)
        return F.linear(input, self.weight.to(input.dtype), bias)


def lora_compute_in_base_dtype(transformer: torch.nn.Module) -> int:
    """Make every LoRA layer compute its branch in the base's dtype; returns how many layers.

    The A/B modules keep their class's state (same parameters, same names); only `forward` differs,
    so the state dict, the optimizer state and the exports are those of the float32 path. Undone
    by `remove_lora` (the layers go) or `lora_compute_in_float32`.
    """
    count = 0
    for module in transformer.modules():
        if isinstance(module, LoraLayer):
            module.cast_input_dtype_enabled = False  # peft's switch for its input cast
            for linear in (*module.lora_A.values(), *module.lora_B.values()):
                if type(linear) is torch.nn.Linear:
                    linear.__class__ = _ComputeDtypeLinear  # no new module: peft's references hold
            count += 1
    return count


def lora_compute_in_float32(transformer: torch.nn.Module) -> None:
    """Undo `lora_compute_in_base_dtype`: peft's own path again (input cast to float32)."""
    for module in transformer.modules():
        if isinstance(module, LoraLayer):
            module.cast_input_dtype_enabled = True
            for linear in (*module.lora_A.values(), *module.lora_B.values()):
                if type(linear) is _ComputeDtypeLinear:
                    linear.__class__ = torch.nn.Linear  # type: ignore[assignment]


@dataclass
class Fp8Base:
    """fp8 storage of an expert's frozen base (diffusers' layerwise casting), and its undoing."""

    originals: dict[int, tuple[torch.nn.Parameter, torch.Tensor]]
    hooked_before: set[int]  # modules that had a diffusers hook registry before (left as they are)

    @classmethod
    def enable(cls, transformer: Any, compute_dtype: torch.dtype) -> Fp8Base:
        """Cast the base to fp8 storage; keeps a reference to each original tensor (no copy: it is
        the tensor the parameter held, on the device it was on)."""
        before = {id(p): (p, p.data) for p in transformer.parameters() if not p.requires_grad}
        hooked = {id(m) for m in transformer.modules() if hasattr(m, "_diffusers_hook")}
        transformer.enable_layerwise_casting(storage_dtype=FP8_STORAGE, compute_dtype=compute_dtype)
        cast = {k: v for k, v in before.items() if v[0].dtype == FP8_STORAGE}
        return cls(originals=cast, hooked_before=hooked)

    def restore(self, transformer: torch.nn.Module) -> None:
        """Remove the casting hooks and put back the original tensors (on their original device)."""
        for module in transformer.modules():
            registry = getattr(module, "_diffusers_hook", None)
            if not isinstance(registry, HookRegistry):
                continue
            for name in _DIFFUSERS_HOOKS:
                hook = registry.get_hook(name)
                if hook is not None:
                    # diffusers' layerwise hook refuses to deinitialise (it would upcast lossy
                    # fp8 weights); the originals are put back below instead
                    hook.deinitalize_hook = _keep  # type: ignore[method-assign]
                    registry.remove_hook(name, recurse=False)
            if id(module) not in self.hooked_before and not registry.hooks:
                # the registry and the `forward` attribute it left on the instance were made here
                del module._diffusers_hook
                module.__dict__.pop("forward", None)
        for param, data in self.originals.values():
            param.data = data
        self.originals.clear()


def _keep(module: torch.nn.Module) -> torch.nn.Module:
    return module


def offload_context(options: MemoryOptions, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The context a forward runs in: tensors saved for backward on the CPU, or as they are."""
    if options.offload == "activations":
        return torch.autograd.graph.save_on_cpu(pin_memory=device.type == "cuda")
    return contextlib.nullcontext()


@contextlib.contextmanager
def saved_tensors(into: list[torch.Tensor]) -> Iterator[None]:
    """Collect every tensor autograd saves for backward (for measuring what a forward keeps)."""

    def pack(t: torch.Tensor) -> torch.Tensor:
        into.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield
