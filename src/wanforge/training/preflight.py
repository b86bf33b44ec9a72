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
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel

from wanforge.training.errors import TrainingMemoryError
from wanforge.training.memory import MemoryOptions

DEFAULT_MEMORY = MemoryOptions()

GIB = 1024**3
LATENT_STRIDE = (4, 8, 8)  # the Wan VAE: frames, height, width
PATCH = (1, 2, 2)  # the transformer's patch embedding
# float32 LoRA weight + its gradient + AdamW's exp_avg and exp_avg_sq
LORA_BYTES_PER_PARAM = 16
# Per token, calibrated against the full-size simulation of a training step
# (`wanforge.training.simulate.simulate_training_step`: the real A14B expert, the trainer's own LoRA,
# loss, backward and AdamW under FakeTensorMode; `tests/training/test_preflight.py` holds the
# estimate within 10% of it). What one block keeps for backward, read off autograd's saved tensors
# of a simulated A14B block (bf16, base-dtype LoRA): in the compute dtype, 11 tensors of width
# `dim` (the head-split q, k, v and attention outputs of both attentions, the modulated norm
# outputs, the residual sums) and 2 of width `ffn_dim` (the FFN hidden before and after the GELU).
BLOCK_DIM_TENSORS = 11
BLOCK_FFN_TENSORS = 2
# ... and, when the model computes in a narrower dtype than float32, 5 float32 tensors of width
# `dim`: the inputs of the three FP32LayerNorms (norm1, norm2, norm3 upcast their input) and the
# q/k RMSNorm upcasts (`qk_norm="rms_norm_across_heads"`).
NORM_FP32_DIM_TENSORS = 5
# peft's float32 path (`lora_compute="float32"`) also casts each LoRA'd linear's input to float32
# and keeps that copy for backward: simulated 141-179 KB per token per block for A14B, which
# 4 x (5 dim + ffn_dim) = 158 KB matches within 12% either way.
LORA_FP32_INPUT_DIM_TENSORS = 5
LORA_FP32_INPUT_FFN_TENSORS = 1
# In flight during backward on top of what is saved (the gradients of the widest tensors, the
# embeddings' and head's activations, the loss in float32): simulated 84 KB per token for A14B;
# `c * (3 dim + 2 ffn_dim)` = 86 KB. With gradient checkpointing the recomputed block's input is
# held twice (the checkpoint's copy and the recompute's), one more `c * dim`; with activation
# offload the block input brought back from the host is a third.
BACKWARD_DIM_TENSORS = 3
BACKWARD_FFN_TENSORS = 2
FP8_BYTES = 1
CUDA_OVERHEAD_BYTES = 2 * GIB  # CUDA context, cuBLAS workspace, allocator fragmentation
SMALLER_FRAMES = (49, 33, 17)
LIMIT_SETTING = "WANFORGE_TRAIN_MEMORY_LIMIT_GB"


def block_linear_params(num_layers: int, dim: int, ffn_dim: int, image_kv_dim: int | None = None) -> int:
    """Weights and biases of the blocks' linears (what fp8 storage casts): self and cross attention
    q, k, v, out (+ the image key/value projections), and the FFN's two linears."""
    per_layer = 8 * (dim * dim + dim) + (dim * ffn_dim + ffn_dim) + (ffn_dim * dim + dim)
    if image_kv_dim is not None:
        per_layer += 2 * (image_kv_dim * dim + dim)
    return num_layers * per_layer


@dataclass(frozen=True)
class ModelSpec:
    """What the estimate reads from one expert."""

    num_layers: int
    dim: int  # heads * head_dim
    ffn_dim: int
    image_kv_dim: int | None  # the image key/value projections' input (Wan 2.1 I2V); None in 2.2
    weight_bytes: int  # one expert's parameters and buffers at their dtype
    compute_bytes: int  # bytes per element of the dtype the blocks compute in
    block_linear_params: int = 0  # `block_linear_params()`: what fp8 storage casts

    @classmethod
    def from_transformer(cls, model: WanTransformer3DModel) -> ModelSpec:
        config = model.config
        tensors = [*model.parameters(), *model.buffers()]
        linears = [m for m in model.blocks.modules() if isinstance(m, torch.nn.Linear)]
        return cls(
            num_layers=int(config["num_layers"]),
            dim=int(config["num_attention_heads"]) * int(config["attention_head_dim"]),
            ffn_dim=int(config["ffn_dim"]),
            image_kv_dim=config["added_kv_proj_dim"],
            weight_bytes=sum(t.numel() * t.element_size() for t in tensors),
            compute_bytes=model.patch_embedding.weight.element_size(),
            block_linear_params=sum(p.numel() for m in linears for p in m.parameters()),
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
    memory: MemoryOptions = DEFAULT_MEMORY,
    overhead: int = 0,
) -> MemoryEstimate:
    """Peak device bytes while one expert trains on `batch_size` windows of `window` (an estimate,
    calibrated against the full-size simulation of a training step; docs/training.md).

    Per token, a block keeps ``B = c * (11 dim + 2 ffn)`` bytes for backward (``c`` the compute
    dtype's size), plus ``4 * 5 dim`` (the float32 norm inputs) when ``c < 4``, plus
    ``4 * (5 dim + ffn)`` on peft's float32 LoRA path; backward has ``W = c * (3 dim + 2 ffn)``
    more in flight. With gradient checkpointing the model keeps each block's input (``c * dim``
    per token per layer) and recomputes one block at a time (whose input is then held twice);
    without, it keeps every block's tensors.

    fp8 base: the blocks' linears are stored in 1 byte instead of ``c``; each is upcast to ``c``
    for its forward, and autograd keeps that copy for backward: one block's worth with gradient
    checkpointing (or offload), every block's without. Activation offload: what the forward saves
    lives in host memory, and the device holds one block's tensors at a time.
    """
    c = spec.compute_bytes
    tokens = window.tokens * batch_size
    block = c * (BLOCK_DIM_TENSORS * spec.dim + BLOCK_FFN_TENSORS * spec.ffn_dim)
    if c < 4:
        block += 4 * NORM_FP32_DIM_TENSORS * spec.dim
        if memory.lora_compute == "float32":
            block += 4 * (LORA_FP32_INPUT_DIM_TENSORS * spec.dim + LORA_FP32_INPUT_FFN_TENSORS * spec.ffn_dim)
    backward = c * (BACKWARD_DIM_TENSORS * spec.dim + BACKWARD_FFN_TENSORS * spec.ffn_dim)
    block_input = c * spec.dim
    weights = spec.weight_bytes
    block_copy = 0  # the upcast weights of one block, kept for its backward
    if memory.fp8_base:
        weights -= spec.block_linear_params * (c - FP8_BYTES)
        block_copy = spec.block_linear_params // spec.num_layers * c
    if memory.offload == "activations":
        activations = tokens * (block + backward + 2 * block_input) + block_copy
    elif gradient_checkpointing:
        activations = tokens * (spec.num_layers * block_input + block + backward + block_input) + block_copy
    else:
        activations = tokens * (spec.num_layers * block + backward) + spec.num_layers * block_copy
    return MemoryEstimate(
        weights=weights,
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
class Plan:
    """What a job's memory depends on besides the model: window, rank, batch and the options."""

    window: Window
    rank: int
    batch_size: int = 1
    gradient_checkpointing: bool = True
    memory: MemoryOptions = DEFAULT_MEMORY

    def estimate(self, spec: ModelSpec, overhead: int = 0) -> MemoryEstimate:
        return estimate(
            spec,
            self.window,
            rank=self.rank,
            batch_size=self.batch_size,
            gradient_checkpointing=self.gradient_checkpointing,
            memory=self.memory,
            overhead=overhead,
        )


# The memory levers a 1403 message offers, cheapest in step time first: the settings that turn
# each on, and the plan with it on (levers already on are left out)
def _levers(plan: Plan) -> list[tuple[tuple[str, ...], Plan]]:
    m = plan.memory
    lora, fp8, offload = (
        "WANFORGE_TRAIN_LORA_COMPUTE=base",
        "WANFORGE_TRAIN_FP8_BASE=1",
        "WANFORGE_TRAIN_OFFLOAD=activations",
    )
    out: list[tuple[tuple[str, ...], Plan]] = []
    if not plan.gradient_checkpointing:
        out.append(
            (
                ("WANFORGE_TRAIN_GRADIENT_CHECKPOINTING=on",),
                dataclasses.replace(plan, gradient_checkpointing=True),
            )
        )
    if m.lora_compute != "base":
        out.append(((lora,), dataclasses.replace(plan, memory=dataclasses.replace(m, lora_compute="base"))))
    if not m.fp8_base:  # fp8 storage needs the base-dtype LoRA path
        names = (fp8,) if m.lora_compute == "base" else (lora, fp8)
        fp8_memory = dataclasses.replace(m, lora_compute="base", fp8_base=True)
        out.append((names, dataclasses.replace(plan, memory=fp8_memory)))
    if m.offload != "activations":  # with checkpointing: only block inputs go to host memory
        on = "WANFORGE_TRAIN_GRADIENT_CHECKPOINTING=on"
        names = (offload,) if plan.gradient_checkpointing else (on, offload)
        offload_memory = dataclasses.replace(m, offload="activations")
        out.append((names, dataclasses.replace(plan, gradient_checkpointing=True, memory=offload_memory)))
    return out


def _combine(base: Plan, changed: Sequence[Plan]) -> Plan:
    """`base` with every lever of `changed` applied."""
    plan, memory = base, dataclasses.asdict(base.memory)
    for p in changed:
        if p.gradient_checkpointing != base.gradient_checkpointing:
            plan = dataclasses.replace(plan, gradient_checkpointing=p.gradient_checkpointing)
        memory.update({k: v for k, v in dataclasses.asdict(p.memory).items() if v != getattr(base.memory, k)})
    return dataclasses.replace(plan, memory=MemoryOptions(**memory))


def option_sets(plan: Plan) -> list[tuple[tuple[str, ...], Plan]]:
    """Every combination of the levers not yet on, fewest settings first: (settings, plan)."""
    levers = _levers(plan)
    out: list[tuple[tuple[str, ...], Plan]] = []
    seen: set[frozenset[str]] = set()
    for size in range(1, len(levers) + 1):
        for combo in itertools.combinations(levers, size):
            names = tuple(dict.fromkeys(n for names, _ in combo for n in names))
            if frozenset(names) not in seen:
                seen.add(frozenset(names))
                out.append((names, _combine(plan, [p for _, p in combo])))
    return sorted(out, key=lambda item: len(item[0]))


def _smaller_jobs(plan: Plan) -> list[tuple[str, Plan]]:
    """Cheaper variants of `plan` in the order they are offered (on top of gradient checkpointing
    if it is off): one smaller rank, window length or area each."""
    out: list[tuple[str, Plan]] = []
    prefix = ""
    if not plan.gradient_checkpointing:
        plan = dataclasses.replace(plan, gradient_checkpointing=True)
        prefix = "WANFORGE_TRAIN_GRADIENT_CHECKPOINTING=on and "
    rank = plan.rank // 2
    while rank >= 4:
        out.append((f"{prefix}lora_rank={rank}", dataclasses.replace(plan, rank=rank)))
        rank //= 2
    w = plan.window
    for frames in (f for f in SMALLER_FRAMES if f < w.frames):
        shorter = Window(frames, w.height, w.width)
        out.append((f"{prefix}WANFORGE_TRAIN_FRAMES={frames}", dataclasses.replace(plan, window=shorter)))
    height, width = w.height // 2 // 16 * 16, w.width // 2 // 16 * 16
    if height >= 16 and width >= 16:
        area = Window(w.frames, height, width)
        out.append((f"{prefix}WANFORGE_TRAIN_AREA={height}x{width}", dataclasses.replace(plan, window=area)))
    return out


def fitting_options(spec: ModelSpec, plan: Plan, available: int, overhead: int = 0) -> list[str]:
    """What would make `plan` fit in `available` bytes: each smallest set of memory options that
    fits (a set is left out when a part of it fits already), then one smaller rank, window or area
    each; every entry with its estimate."""
    fitting: list[str] = []
    fitted: list[set[str]] = []
    for names, p in option_sets(plan):
        if any(f <= set(names) for f in fitted):
            continue
        if (t := p.estimate(spec, overhead).total) <= available:
            fitted.append(set(names))
            fitting.append(f"set {' and '.join(names)} (about {gib(t)})")
    for name, p in _smaller_jobs(plan):
        if (t := p.estimate(spec, overhead).total) <= available:
            fitting.append(f"set {name} (about {gib(t)})")
    return fitting


def choose_gradient_checkpointing(
    spec: ModelSpec, plan: Plan, available: int | None, overhead: int = 0
) -> bool:
    """`WANFORGE_TRAIN_GRADIENT_CHECKPOINTING=auto`: off (faster: no second forward of each block)
    when the estimate without it fits `available`, on otherwise or when nothing is measured. With
    activation offload it stays on: without it, every block's tensors would go to host memory."""
    if available is None or plan.memory.offload != "none":
        return True
    without = dataclasses.replace(plan, gradient_checkpointing=False).estimate(spec, overhead)
    return without.total > available


def check_memory(
    spec: ModelSpec,
    window: Window,
    *,
    rank: int,
    batch_size: int,
    gradient_checkpointing: bool,
    available: int | None,
    memory: MemoryOptions = DEFAULT_MEMORY,
    overhead: int = 0,
) -> MemoryEstimate:
    """The estimate; raises `TrainingMemoryError` (1403) when it exceeds `available` (None: no check)."""
    plan = Plan(window, rank, batch_size, gradient_checkpointing, memory)
    needed = plan.estimate(spec, overhead)
    if available is None or needed.total <= available:
        return needed
    fitting = fitting_options(spec, plan, available, overhead)
    options = (
        "options that would fit: " + "; ".join(fitting)
        if fitting
        else "no memory option, smaller lora_rank, window or area would fit"
    )
    raise TrainingMemoryError(
        f"not enough device memory to train: the job needs about {gib(needed.total)} (an estimate: "
        f"weights {gib(needed.weights)}, LoRA and optimizer {gib(needed.lora)}, activations "
        f"{gib(needed.activations)}, overhead {gib(needed.overhead)}) for {window} windows at "
        f"lora_rank {rank} with {describe(plan)}, and about {gib(available)} is available; {options}"
    )


def describe(plan: Plan) -> str:
    """The options a plan runs with, as the settings spell them."""
    m = plan.memory
    return (
        f"gradient checkpointing {'on' if plan.gradient_checkpointing else 'off'}, LoRA compute "
        f"{m.lora_compute}, fp8 base {'on' if m.fp8_base else 'off'}, offload {m.offload}"
    )
