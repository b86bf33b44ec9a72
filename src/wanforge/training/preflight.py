"""Training memory preflight: estimate a job's peak device memory and refuse it if it cannot fit.

The estimate is a formula from the model config, the training window, the LoRA rank and
gradient checkpointing, not a measurement (docs/training.md gives the formula). It exists so a
job that cannot fit fails at once with a 1403 message naming what would fit, instead of running
out of memory mid-job. No library estimates a Wan LoRA run's memory, so it is written here.

What the device holds while one expert trains (`train_sequentially` keeps only the active expert
there, in every memory mode; the other expert, the text encoder and the VAE are parked on the
CPU): that expert's weights at their dtype, the LoRA parameters with their gradients and AdamW
state (all float32), the activations kept for backward, and a fixed allowance for the CUDA
context and allocator slack.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel

from wanforge.training.errors import TrainingMemoryError

GIB = 1024**3
LATENT_STRIDE = (4, 8, 8)  # the Wan VAE: frames, height, width
PATCH = (1, 2, 2)  # the transformer's patch embedding
# float32 LoRA weight + its gradient + AdamW's exp_avg and exp_avg_sq
LORA_BYTES_PER_PARAM = 16
# Kept for backward per token in one block, in the compute dtype: multiples of `dim` (norm
# outputs, q/k/v, attention outputs, residual sums, modulation) and of `ffn_dim` (the FFN hidden
# before and after the GELU). A rounded count of the block's saved tensors, not a measurement.
BLOCK_DIM_TENSORS = 12
BLOCK_FFN_TENSORS = 2
# peft casts each LoRA'd linear's input to the float32 LoRA dtype and keeps that copy for backward
# when the model computes in a narrower dtype: q, k, v, out of self-attention (7 = 3 + 1 here and
# 1 + 1 for the cross-attention query and out, + 1 for the FFN's first linear) in `dim`, and the
# FFN's second linear in `ffn_dim`. The cross-attention key/value inputs are the 512 text tokens.
LORA_INPUT_DIM_TENSORS = 7
LORA_INPUT_FFN_TENSORS = 1
CUDA_OVERHEAD_BYTES = 2 * GIB  # CUDA context, cuBLAS workspace, allocator fragmentation
SMALLER_FRAMES = (49, 33, 17)
LIMIT_SETTING = "WANFORGE_TRAIN_MEMORY_LIMIT_GB"


@dataclass(frozen=True)
class ModelSpec:
    """What the estimate reads from one expert."""

    num_layers: int
    dim: int  # heads * head_dim
    ffn_dim: int
    image_kv_dim: int | None  # the image key/value projections' input (Wan 2.1 I2V); None in 2.2
    weight_bytes: int  # one expert's parameters and buffers at their dtype
    compute_bytes: int  # bytes per element of the dtype the blocks compute in

    @classmethod
    def from_transformer(cls, model: WanTransformer3DModel) -> ModelSpec:
        config = model.config
        tensors = [*model.parameters(), *model.buffers()]
        return cls(
            num_layers=int(config["num_layers"]),
            dim=int(config["num_attention_heads"]) * int(config["attention_head_dim"]),
            ffn_dim=int(config["ffn_dim"]),
            image_kv_dim=config["added_kv_proj_dim"],
            weight_bytes=sum(t.numel() * t.element_size() for t in tensors),
            compute_bytes=model.patch_embedding.weight.element_size(),
        )


@dataclass(frozen=True)
class Window:
    """A training window in pixels: frames (4k+1) x height x width."""

    frames: int
    height: int
    width: int

    @property
    def tokens(self) -> int:
        """Transformer tokens: latent frames (F-1)/4+1, latent H/8 and W/8, patched 1x2x2."""
        (ft, fh, fw), (pt, ph, pw) = LATENT_STRIDE, PATCH
        latent_frames = (self.frames - 1) // ft + 1
        return (latent_frames // pt) * (self.height // fh // ph) * (self.width // fw // pw)

    def __str__(self) -> str:
        return f"{self.frames}-frame {self.height}x{self.width}"


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    lora: int
    activations: int
    overhead: int

    @property
    def total(self) -> int:
        return self.weights + self.lora + self.activations + self.overhead


def lora_param_count(spec: ModelSpec, rank: int) -> int:
    """LoRA parameters of one expert: rank * (in + out) for each adapted linear (lora.py's targets)."""
    dim, ffn = spec.dim, spec.ffn_dim
    per_layer = 8 * (dim + dim) + (ffn + dim) + (dim + ffn)  # 2 x (q, k, v, out); ffn.0; ffn.2
    if spec.image_kv_dim is not None:
        per_layer += 2 * (spec.image_kv_dim + dim)
    return spec.num_layers * per_layer * rank


def estimate(
    spec: ModelSpec,
    window: Window,
    *,
    rank: int,
    batch_size: int = 1,
    gradient_checkpointing: bool = True,
    overhead: int = 0,
) -> MemoryEstimate:
    """Peak device bytes while one expert trains on `batch_size` windows of `window` (an estimate).

    Per token, a block keeps ``c * (12 dim + 2 ffn)`` bytes for backward (``c`` the compute
    dtype's size), plus ``4 * (7 dim + ffn)`` for peft's float32 input copies when ``c < 4``.
    With gradient checkpointing the model keeps each block's input (``c * dim`` per token per
    layer) and recomputes one block at a time; without, it keeps every block's tensors.
    """
    tokens = window.tokens * batch_size
    block = spec.compute_bytes * (BLOCK_DIM_TENSORS * spec.dim + BLOCK_FFN_TENSORS * spec.ffn_dim)
    if spec.compute_bytes < 4:
        block += 4 * (LORA_INPUT_DIM_TENSORS * spec.dim + LORA_INPUT_FFN_TENSORS * spec.ffn_dim)
    if gradient_checkpointing:
        activations = tokens * (spec.num_layers * spec.compute_bytes * spec.dim + block)
    else:
        activations = tokens * spec.num_layers * block
    return MemoryEstimate(
        weights=spec.weight_bytes,
        lora=lora_param_count(spec, rank) * LORA_BYTES_PER_PARAM,
        activations=activations,
        overhead=overhead,
    )


def gib(n: int) -> str:
    """`12.3 GiB`, or `45.6 MiB` below 1 GiB."""
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / 2**20:.1f} MiB"


def largest_window(frame_shapes: Iterable[Sequence[int]]) -> Window:
    """The window with the most tokens among samples' frame shapes ``(F, H, W, 3)``."""
    windows = [Window(int(s[0]), int(s[1]), int(s[2])) for s in frame_shapes]
    if not windows:
        raise ValueError("no windows to estimate")
    return max(windows, key=lambda w: w.tokens)


def memory_limit_bytes(gib_limit: float | None) -> int | None:
    """`WANFORGE_TRAIN_MEMORY_LIMIT_GB` in bytes (None: unset)."""
    return None if gib_limit is None else int(gib_limit * GIB)


def available_bytes(
    device: torch.device, resident_bytes: int = 0, limit_bytes: int | None = None
) -> int | None:
    """What training may use: on CUDA the free memory plus `resident_bytes` (pipeline weights now
    on the device, which the trainer parks on the CPU), capped by `limit_bytes`; elsewhere only
    `limit_bytes` (None: no check)."""
    measured = None
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        measured = free + resident_bytes
    if limit_bytes is None:
        return measured
    return limit_bytes if measured is None else min(limit_bytes, measured)


@dataclass(frozen=True)
class _Plan:
    window: Window
    rank: int
    gradient_checkpointing: bool
    batch_size: int


def _alternatives(plan: _Plan) -> list[tuple[str, _Plan]]:
    """Cheaper variants of `plan` in the order they are offered: gradient checkpointing if it is
    off, then (on top of it) one smaller rank, window length or area each."""
    out: list[tuple[str, _Plan]] = []
    prefix = ""
    if not plan.gradient_checkpointing:
        plan = dataclasses.replace(plan, gradient_checkpointing=True)
        out.append(("gradient checkpointing", plan))
        prefix = "gradient checkpointing and "
    rank = plan.rank // 2
    while rank >= 4:
        out.append((f"{prefix}lora_rank {rank}", dataclasses.replace(plan, rank=rank)))
        rank //= 2
    w = plan.window
    for frames in (f for f in SMALLER_FRAMES if f < w.frames):
        shorter = Window(frames, w.height, w.width)
        out.append((f"{prefix}{frames}-frame windows", dataclasses.replace(plan, window=shorter)))
    height, width = w.height // 2 // 16 * 16, w.width // 2 // 16 * 16
    if height >= 16 and width >= 16:
        area = Window(w.frames, height, width)
        out.append((f"{prefix}a {height}x{width} training area", dataclasses.replace(plan, window=area)))
    return out


def check_memory(
    spec: ModelSpec,
    window: Window,
    *,
    rank: int,
    batch_size: int,
    gradient_checkpointing: bool,
    available: int | None,
    overhead: int = 0,
) -> MemoryEstimate:
    """The estimate; raises `TrainingMemoryError` (1403) when it exceeds `available` (None: no check)."""
    plan = _Plan(window, rank, gradient_checkpointing, batch_size)

    def total(p: _Plan) -> MemoryEstimate:
        return estimate(
            spec,
            p.window,
            rank=p.rank,
            batch_size=p.batch_size,
            gradient_checkpointing=p.gradient_checkpointing,
            overhead=overhead,
        )

    needed = total(plan)
    if available is None or needed.total <= available:
        return needed
    fitting = [
        f"{name} (about {gib(t)})" for name, p in _alternatives(plan) if (t := total(p).total) <= available
    ]
    options = (
        "options that would fit: " + "; ".join(fitting)
        if fitting
        else "none of gradient checkpointing, a smaller lora_rank, window or area would fit"
    )
    raise TrainingMemoryError(
        f"not enough device memory to train: the job needs about {gib(needed.total)} (an estimate: "
        f"weights {gib(needed.weights)}, LoRA and optimizer {gib(needed.lora)}, activations "
        f"{gib(needed.activations)}, overhead {gib(needed.overhead)}) for {window} windows at "
        f"lora_rank {rank}, and about {gib(available)} is available; {options}"
    )
