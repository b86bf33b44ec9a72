"""LoRA training speed and memory of a full-size Wan2.2-I2V-A14B expert on one GPU, random weights.

    python benchmarks/gpu_train.py                  # on a GPU: 480x832x81, rank 32, each memory option
    python benchmarks/gpu_train.py --smoke          # on the CPU, tiny config, seconds (CI)
    python benchmarks/gpu_train.py --out results.json

One training step is what the trainer does per sample: a forward of the expert with wanforge's
LoRA (``wanforge.training.lora.add_lora``: float32 adapter on the bf16 base), a flow-matching MSE
loss, backward, and an AdamW step over the adapter. Memory options: gradient checkpointing on
(the trainer's default) and off. Reported: s/step and the peak GPU memory of each.
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

from gpu_model import A14B, SMOKE, Shape, build_expert, gpu_facts, inputs, peak_memory_gib, reset_peak, timed

from wanforge.training.lora import add_lora, lora_parameters

OPTIONS = {"checkpointing": True, "no_checkpointing": False}


def measure(
    args: argparse.Namespace,
    option: str,
    checkpointing: bool,
    device: torch.device,
    dtype: torch.dtype,
    config: dict[str, Any],
    shape: Shape,
) -> dict[str, Any]:
    """s/step and peak memory of one memory option, on a freshly built expert."""
    expert = build_expert(config, device, dtype)
    add_lora(expert, rank=args.rank, alpha=float(args.rank), generator=torch.Generator().manual_seed(0))
    expert.train()
    if checkpointing:
        expert.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(list(lora_parameters(expert).values()), lr=2e-4)
    feed = inputs(config, shape, device, dtype)
    target = torch.randn(1, config["out_channels"], *shape.latent, device=device, dtype=torch.float32)

    def step() -> None:
        out = expert(**feed, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(out.float(), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    reset_peak(device)
    seconds: float | None = None
    error = None
    try:
        seconds = timed(step, device, 1 if args.smoke else args.repeats)
    except torch.OutOfMemoryError as exc:
        error = f"out of memory: {str(exc).splitlines()[0]}"
    row = {
        "size": f"{shape.width}x{shape.height}x{shape.frames}",
        "rank": args.rank,
        "option": option,
        "s_per_step": round(seconds, 4) if seconds is not None else None,
        "peak_memory_gib": peak_memory_gib(device),
        "error": error,
    }
    print(json.dumps(row), flush=True)
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device("cpu" if args.smoke else "cuda")
    dtype = torch.float32 if args.smoke else torch.bfloat16
    config = SMOKE if args.smoke else A14B
    shape = Shape("smoke", 5, 32, 48) if args.smoke else Shape("480p", 81, 480, 832)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    rows = [
        measure(args, option, checkpointing, device, dtype, config, shape)
        for option, checkpointing in OPTIONS.items()
    ]
    return {"facts": gpu_facts(device), "smoke": args.smoke, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny config, one step (CI)")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per option")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU, or pass --smoke")
    if args.smoke:
        torch.set_num_threads(1)
    result = run(args)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
