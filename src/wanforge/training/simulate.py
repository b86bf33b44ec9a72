"""A LoRA training step of the real full-size A14B expert, simulated on the CPU with no memory.

The same machinery as :mod:`wanforge.engine.simulate` (FakeTensorMode, the allocation counter),
running the trainer's own code: its LoRA (``add_lora``), its memory options (LoRA compute dtype,
fp8 base, activation offload), its loss and AdamW step. It lives in the training layer because
it runs the trainer (the engine never imports training); the preflight is calibrated against it
(``tests/training/test_preflight.py``). Its figures are simulated, never measured.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from diffusers.hooks.layerwise_casting import LayerwiseCastingHook

from wanforge.engine.simulate import (
    A14B,
    CONDITION_CHANNELS,
    DEVICE,
    HOST,
    LATENT_CHANNELS,
    TEXT_TOKENS,
    AllocationCounter,
    Simulated,
    fake_mode,
    latent_grid,
    meta_expert,
    module_tensors,
    timed,
)
from wanforge.training.lora import add_lora, lora_parameters
from wanforge.training.memory import Fp8Base, MemoryOptions, lora_compute_in_base_dtype
from wanforge.training.trainer import MAX_GRAD_NORM, WEIGHT_DECAY, Batch, flow_matching_loss


@contextmanager
def _layerwise_casting_by_set_data() -> Iterator[None]:
    """diffusers' fp8 layerwise-casting hook, with its ``module.to(dtype)`` done as ``.data =``.

    ``nn.Module._apply`` always swaps a fake parameter for a new one (``swap_tensors``), which
    refuses a tensor that FakeTensorMode holds a weak reference to; on real tensors ``.to(dtype)``
    assigns ``.data``, which is what this does (the old storage lives on where a view of it was
    saved for backward, exactly as on a GPU)."""

    def cast(module: torch.nn.Module, dtype: torch.dtype) -> None:
        for param in module.parameters(recurse=False):
            param.data = param.data.to(dtype)

    def pre_forward(self: Any, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        cast(module, self.compute_dtype)
        return args, kwargs

    def post_forward(self: Any, module: torch.nn.Module, output: Any) -> Any:
        cast(module, self.storage_dtype)
        return output

    hook = LayerwiseCastingHook
    saved = hook.pre_forward, hook.post_forward
    hook.pre_forward, hook.post_forward = pre_forward, post_forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        hook.pre_forward, hook.post_forward = saved  # type: ignore[method-assign]


@contextmanager
def _offload_to_host() -> Iterator[None]:
    """``torch.autograd.graph.save_on_cpu`` for the simulation: what autograd saves moves to the
    host and back for backward. On the simulated CPU device ``save_on_cpu`` would copy to the same
    device, so the host is the meta device here (not counted), as the CPU is for a CUDA trainer."""

    def pack(tensor: torch.Tensor) -> tuple[torch.device, torch.Tensor]:
        return tensor.device, tensor.to(HOST)

    def unpack(packed: tuple[torch.device, torch.Tensor]) -> torch.Tensor:
        device, tensor = packed
        return tensor.to(device)

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        yield


def simulate_training_step(
    frames: int,
    *,
    width: int = 832,
    height: int = 480,
    rank: int = 32,
    gradient_checkpointing: bool = True,
    memory: MemoryOptions | None = None,
    num_layers: int | None = None,
) -> Simulated:
    """One LoRA training step of one expert, in its steady state, as ``ExpertTrainer`` runs it:
    the trainer's ``add_lora`` and memory options (``memory``: LoRA compute dtype, fp8 base,
    activation offload) on the real expert, ``flow_matching_loss``, backward, gradient clipping
    and the AdamW step. ``resident_bytes``: the expert's weights (fp8 blocks under ``fp8_base``),
    the LoRA parameters, AdamW's two moments (they exist from the second step on) and the batch;
    the peak above them holds the activations and the gradients."""

    options = memory or MemoryOptions()
    seconds: list[float] = []
    # the casting hooks bind their methods when registered, so the patch spans the whole step
    with timed(seconds), _layerwise_casting_by_set_data():
        model = meta_expert(num_layers)  # the LoRA too is made on meta, outside the fake mode
        add_lora(model, rank, None, torch.Generator().manual_seed(0))
        if options.lora_compute == "base":
            lora_compute_in_base_dtype(model)
        if options.fp8_base:  # on meta too: a fake parameter cannot be swapped by `.to(dtype)`
            Fp8Base.enable(model, torch.bfloat16)
        with fake_mode():
            model.to_empty(device=DEVICE)  # the trainer's move to the device
            if gradient_checkpointing:
                model.enable_gradient_checkpointing()
            f, h, w = latent_grid(width, height, frames)
            batch = Batch(
                latents=torch.empty(1, LATENT_CHANNELS, f, h, w),
                condition=torch.empty(1, CONDITION_CHANNELS, f, h, w),
                text=torch.empty(1, TEXT_TOKENS, A14B["text_dim"]),
                noise=torch.empty(1, LATENT_CHANNELS, f, h, w),
                timesteps=torch.tensor([500.0]),
            )
            params = list(lora_parameters(model).values())
            optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=WEIGHT_DECAY)
            for param in params:  # a first step makes AdamW's state, as the trainer's first step does
                param.grad = torch.zeros_like(param)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state = [t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
            counter = AllocationCounter()
            resident = counter.hold(
                [*module_tensors(model), *state, batch.latents, batch.condition, batch.text, batch.noise]
            )
            with counter:
                with _offload_to_host() if options.offload == "activations" else contextlib.nullcontext():
                    loss = flow_matching_loss(model, batch)
                loss.backward()
                del loss
                torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
    what = (
        f"training step {width}x{height}x{frames} rank {rank}"
        f" checkpointing {'on' if gradient_checkpointing else 'off'}, LoRA compute {options.lora_compute}"
        f"{', fp8 base' if options.fp8_base else ''}{', offload' if options.offload != 'none' else ''}"
    )
    return Simulated(what, resident, counter.peak - resident, seconds[0])
