"""The acceptance run's side of the memory plan: the plan's inputs for this card and model, and
its predicted peak for each row's work (``wanforge.engine.plan``)."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any

import torch

from wanforge.engine.random_model import build_meta_components, parse_random_model

GIB = 2**30


@dataclass(frozen=True)
class Planning:
    """What the memory plan (``wanforge.engine.plan``) needs: the card as this run found it before
    loading anything, the model's sizes (counted on the meta device) and the worker's settings."""

    module: Any
    card: Any
    sizes: Any
    options: Any


def planning_for(model: str, device: torch.device) -> Planning | str:
    """The plan's inputs, or why there is no plan to compare with."""
    try:
        from wanforge.engine import plan as planning  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return "plan: not available (wanforge.engine.plan does not exist in this tree)"
    from wanforge.config import Settings

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    sizes = planning.ModelSizes.from_pipeline(build_meta_components(parse_random_model(model), dtype))
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        name, capability = torch.cuda.get_device_name(device), torch.cuda.get_device_capability(device)
        torchao = importlib.util.find_spec("torchao") is not None
        card = planning.Card(name, total, free, capability, torchao=torchao)
    else:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        card = planning.Card("cpu", memory, memory, None)
    settings = Settings()  # the worker's defaults, as the server started here runs them
    options = planning.Options(
        memory_mode=settings.memory_mode,
        fp8=settings.fp8,
        attention=settings.attention_backend,
        compile=settings.compile,
        step_cache=settings.step_cache,
        vae_tiling=settings.vae_tiling,
    )
    return Planning(planning, card, sizes, options)


def planned(ctx: Planning | str, kind: str, **work: Any) -> dict[str, Any]:
    """The plan's predicted peak for the same work, and what it decided."""
    if isinstance(ctx, str):
        return {"plan": ctx}
    planning = ctx.module
    try:
        if kind == "train":
            from wanforge.training import plan as training_plan

            request = training_plan.TrainingRequest(
                frames=work["frames"],
                height=work["height"],
                width=work["width"],
                rank=work["rank"],
                gradient_checkpointing="on",
            )
            result = training_plan.plan_training(ctx.card, ctx.sizes, request, ctx.options)
            peak, how = result.peak_bytes, f"plan: training, {'fits' if result.fits else 'does not fit'}"
        elif (
            kind == "forward"
        ):  # one expert forward: its weights (fp8: block linears in 1 byte) + activations
            sizes = ctx.sizes
            weights = sizes.expert_bytes if work["fp8"] == "off" else sizes.fp8_expert_bytes()
            peak = weights + planning.forward_activation_bytes(
                sizes, work["width"], work["height"], work["frames"]
            )
            how = "plan formula: one expert's weights + forward_activation_bytes (no LoRA slot)"
        else:
            result = planning.plan_generation(
                ctx.card, ctx.sizes, ctx.options, work["resolution"], work["frames"]
            )
            peak = result.peak_bytes
            how = (
                f"plan: the whole job at {result.width}x{result.height}x{result.frames}, "
                f"memory_mode={result.memory_mode} fp8={result.fp8}, {'fits' if result.fits else 'does not fit'}"
            )
    except Exception as exc:  # the plan refusing a setting is an answer too: show it
        return {"plan": f"plan: not available ({type(exc).__name__}: {exc})"}
    return {"plan_peak_gib": round(peak / GIB, 2), "plan": how}
