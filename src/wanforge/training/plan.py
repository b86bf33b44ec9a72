"""The memory plan of a LoRA training job on a card: the preflight's estimate (calibrated against
the simulated training step, :mod:`wanforge.training.simulate`) in the engine plan's terms
(:class:`wanforge.engine.plan.Plan`), for ``wanforge plan --train`` and the GPU acceptance run.
It lives in the training layer because it reads the trainer's preflight (the engine never imports
training)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from wanforge.engine.attention import AttentionBackend
from wanforge.engine.plan import (
    ALLOCATOR_MARGIN_BYTES,
    GIB,
    Card,
    ModelSizes,
    Options,
    Plan,
    choose_attention,
)
from wanforge.training.memory import MemoryOptions
from wanforge.training.preflight import ModelSpec, Window, choose_gradient_checkpointing, fitting_options
from wanforge.training.preflight import Plan as JobPlan


@dataclass(frozen=True)
class TrainingRequest:
    """A training job's window and LoRA (the defaults are the A14B training profile's)."""

    frames: int = 33
    height: int = 480
    width: int = 832
    rank: int = 32
    gradient_checkpointing: str = "auto"  # "auto" | "on" | "off"
    fp8_base: bool = False
    offload: bool = False
    lora_compute: str = "base"
    memory_limit_bytes: int | None = None


def plan_training(
    card: Card, sizes: ModelSizes, request: TrainingRequest = TrainingRequest(), options: Options = Options()
) -> Plan:
    """The plan of a LoRA training job on ``card``: one expert on the device (the trainer parks the
    rest on the CPU), the preflight's estimate (calibrated against the simulated training step),
    auto gradient checkpointing as the trainer decides it, and the training attention backend."""
    if not card.cuda:
        serving: AttentionBackend = "native"
        training: AttentionBackend = "native"
    else:
        serving, training = choose_attention(card, options.attention)
    spec = ModelSpec(
        num_layers=sizes.num_layers,
        dim=sizes.dim,
        ffn_dim=sizes.ffn_dim,
        image_kv_dim=None,
        weight_bytes=sizes.expert_bytes,
        compute_bytes=sizes.compute_bytes,
        block_linear_params=sizes.expert_block_linear_params,
    )
    memory = MemoryOptions(
        lora_compute="float32" if request.lora_compute == "float32" else "base",
        fp8_base=request.fp8_base,
        offload="activations" if request.offload else "none",
    )
    window = Window(request.frames, request.height, request.width)
    available = card.free_bytes if card.cuda else None
    if request.memory_limit_bytes is not None:
        available = (
            request.memory_limit_bytes if available is None else min(available, request.memory_limit_bytes)
        )
    job = JobPlan(window, request.rank, memory=memory)
    overhead = ALLOCATOR_MARGIN_BYTES if card.cuda else 0
    if request.gradient_checkpointing == "auto":
        checkpointing = choose_gradient_checkpointing(spec, job, available, overhead)
    else:
        checkpointing = request.gradient_checkpointing == "on"
    job = replace(job, gradient_checkpointing=checkpointing)
    estimate = job.estimate(spec)
    fits = available is None or estimate.total + overhead <= available
    # the allocator margin comes off what is available, so each option's figure compares with it
    advice = () if fits or available is None else tuple(fitting_options(spec, job, available - overhead))
    return Plan(
        card=card.name,
        task="train",
        memory_mode="trainer",  # the trainer moves the active expert alone to the device
        fp8="storage" if request.fp8_base else "off",
        attention=serving,
        training_attention=training,
        compile="off",
        resident=("transformer",),
        width=request.width,
        height=request.height,
        frames=request.frames,
        vae_tiled=False,
        weights_bytes=estimate.weights + estimate.lora,
        activation_bytes=estimate.activations,
        available_bytes=(available - overhead) if available is not None else 0,
        fits=fits,
        advice=advice or (() if fits else ("no memory option, smaller lora_rank, window or area would fit",)),
        rank=request.rank,
        gradient_checkpointing=checkpointing,
    )


def training_request_from_settings(
    settings: Any, *, frames: int | None = None, rank: int = 32
) -> TrainingRequest:
    """A training job's request from a worker's ``Settings`` (``WANFORGE_TRAIN_*``); ``frames``
    replaces the window length (default: ``WANFORGE_TRAIN_FRAMES``, else the A14B profile's 33)."""
    default = TrainingRequest()
    height, width = (
        (int(side) for side in settings.train_area.split("x"))
        if settings.train_area
        else (default.height, default.width)
    )
    limit = settings.train_memory_limit_gb
    return TrainingRequest(
        frames=frames or settings.train_frames or default.frames,
        height=height,
        width=width,
        rank=rank,
        gradient_checkpointing=settings.train_gradient_checkpointing,
        fp8_base=settings.train_fp8_base,
        offload=settings.train_offload == "activations",
        lora_compute=settings.train_lora_compute,
        memory_limit_bytes=None if limit is None else int(limit * GIB),
    )
