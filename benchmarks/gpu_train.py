"""LoRA training speed and memory of a full-size Wan2.2-I2V-A14B expert on one GPU, random weights.

    python benchmarks/gpu_train.py                  # on a GPU: 480x832x33, rank 32, each memory option
    python benchmarks/gpu_train.py --smoke          # on the CPU, tiny config, seconds (CI)
    python benchmarks/gpu_train.py --out results.json

    python benchmarks/gpu_train.py --options checkpointing,fp8_base --frames 81   # a subset, another window

The default window is the shipped A14B training profile's (``wanforge.training.profiles``: 33
frames at the 480x832 area).

One training step is what the trainer does per sample: a forward of the expert with wanforge's
LoRA (``wanforge.training.lora.add_lora``: float32 adapter on the bf16 base), a flow-matching MSE
loss, backward, and an AdamW step over the adapter. Each memory option is applied the way the
trainer applies it (``wanforge.training.memory``; docs/training.md, "Memory and speed"):

- ``checkpointing``: the defaults (LoRA computed in bf16, float32 masters), gradient checkpointing;
- ``no_checkpointing``: the same without gradient checkpointing;
- ``float32_lora``: peft's own float32 LoRA path (the input cast to float32), checkpointing;
- ``fp8_base``: the frozen base linears stored in float8_e4m3fn, checkpointing;
- ``offload``: the tensors saved for backward kept in pinned host memory, checkpointing;
- ``fp8_base+offload``: both.

Reported per option: s/step, the peak GPU memory and the preflight's estimate for the same job
(``estimate_gib``: the formula the trainer refuses jobs with, to compare against the peak).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gpu_model import (
    A14B,
    SMOKE,
    Shape,
    build_expert,
    gpu_facts,
    inputs,
    peak_memory_gib,
    reset_peak,
    run_and_write,
    timed,
)

from wanforge.engine.profiles import WAN22_I2V_A14B
from wanforge.training.lora import add_lora, lora_parameters
from wanforge.training.memory import Fp8Base, MemoryOptions, lora_compute_in_base_dtype, offload_context
from wanforge.training.preflight import CUDA_OVERHEAD_BYTES, GIB, ModelSpec, Plan, Window
from wanforge.training.profiles import training_profile

SHIPPED = training_profile(WAN22_I2V_A14B.name)  # the window a worker trains A14B on

# option -> (gradient checkpointing, memory options)
OPTIONS: dict[str, tuple[bool, MemoryOptions]] = {
    "checkpointing": (True, MemoryOptions()),
    "no_checkpointing": (False, MemoryOptions()),
    "float32_lora": (True, MemoryOptions(lora_compute="float32")),
    "fp8_base": (True, MemoryOptions(fp8_base=True)),
    "offload": (True, MemoryOptions(offload="activations")),
    "fp8_base+offload": (True, MemoryOptions(fp8_base=True, offload="activations")),
}


def measure(
    args: argparse.Namespace,
    option: str,
    device: torch.device,
    dtype: torch.dtype,
    config: dict[str, Any],
    shape: Shape,
) -> dict[str, Any]:
    """s/step and peak memory of one memory option, on a freshly built expert."""
    checkpointing, memory = OPTIONS[option]
    expert = build_expert(config, device, dtype)
    spec = ModelSpec.from_transformer(expert)
    plan = Plan(Window(shape.frames, shape.height, shape.width), args.rank, 1, checkpointing, memory)
    overhead = CUDA_OVERHEAD_BYTES if device.type == "cuda" else 0
    add_lora(expert, rank=args.rank, alpha=float(args.rank), generator=torch.Generator().manual_seed(0))
    if memory.lora_compute == "base":
        lora_compute_in_base_dtype(expert)
    if memory.fp8_base:
        Fp8Base.enable(expert, dtype).originals.clear()  # nothing to restore: the expert is dropped
    expert.train()
    if checkpointing:
        expert.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(list(lora_parameters(expert).values()), lr=2e-4)
    feed = inputs(config, shape, device, dtype)
    target = torch.randn(1, config["out_channels"], *shape.latent, device=device, dtype=torch.float32)

    def step() -> None:
        with offload_context(memory, device):
            out = expert(**feed, return_dict=False)[0]
            loss = torch.nn.functional.mse_loss(out.float(), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    reset_peak(device)
    seconds: float | None = None
    error = None
    try:
        seconds = timed(step, device, args.repeats)
    except torch.OutOfMemoryError as exc:
        error = f"out of memory: {str(exc).splitlines()[0]}"
    row = {
        "size": f"{shape.width}x{shape.height}x{shape.frames}",
        "rank": args.rank,
        "option": option,
        "s_per_step": round(seconds, 4) if seconds is not None else None,
        "peak_memory_gib": peak_memory_gib(device),
        "estimate_gib": round(plan.estimate(spec, overhead).total / GIB, 3),
        "error": error,
    }
    print(json.dumps(row), flush=True)
    return row


def window(args: argparse.Namespace) -> Shape:
    """The training window: the flags given, else the shipped profile's (--smoke: 5x32x48)."""
    default = (5, 32, 48) if args.smoke else (SHIPPED.frames, *SHIPPED.area)
    frames, height, width = (
        given or d for given, d in zip((args.frames, args.height, args.width), default, strict=True)
    )
    return Shape("train", frames, height, width)


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device("cpu" if args.smoke else "cuda")
    dtype = torch.float32 if args.smoke else torch.bfloat16
    config = SMOKE if args.smoke else A14B
    shape = window(args)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    rows = [measure(args, option, device, dtype, config, shape) for option in args.options]
    return {"facts": gpu_facts(device), "smoke": args.smoke, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny config, one step (CI)")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument(
        "--repeats", type=int, help="timed steps per option (default: 1 with --smoke, else 3)"
    )
    parser.add_argument(
        "--options",
        type=lambda text: text.split(","),
        default=list(OPTIONS),
        help=f"comma-separated, of {', '.join(OPTIONS)} (default: all)",
    )
    parser.add_argument(
        "--frames",
        type=int,
        help=f"window frames (default: {SHIPPED.frames}, the shipped profile's; --smoke: 5)",
    )
    parser.add_argument("--height", type=int, help=f"window height (default: {SHIPPED.area[0]}; --smoke: 32)")
    parser.add_argument("--width", type=int, help=f"window width (default: {SHIPPED.area[1]}; --smoke: 48)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if unknown := [o for o in args.options if o not in OPTIONS]:
        parser.error(f"unknown options {unknown}; expected some of {list(OPTIONS)}")
    if args.repeats is None:
        args.repeats = 1 if args.smoke else 3
    return run_and_write(parser, args, run)


if __name__ == "__main__":
    sys.exit(main())
