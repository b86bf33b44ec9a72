"""The simulated memory figures of docs/engine.md and docs/training.md: the real A14B modules at
full size under FakeTensorMode on the CPU (`wanforge.engine.simulate`), beside the plan's and the
preflight's formulas. Every number here is simulated, none is measured on a GPU.

    python benchmarks/simulate_memory.py [--quick] [--out figures.json]

`--quick` leaves out the slow rows (the tiled decodes, minutes each; the full-depth training steps,
about a minute each). About 15 minutes in all on two busy CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from wanforge.engine import plan
from wanforge.engine.simulate import (
    SIZES,
    Simulated,
    simulate_forward,
    simulate_vae_decode,
    simulate_vae_encode,
)
from wanforge.training.memory import MemoryOptions
from wanforge.training.preflight import ModelSpec, Window, estimate
from wanforge.training.simulate import simulate_training_step

GIB = 2**30
A14B = plan.ModelSizes.A14B
SPEC = ModelSpec(40, 5120, 13824, None, A14B.expert_bytes, 2, A14B.expert_block_linear_params)
TRAINING = {
    "checkpointing": (True, MemoryOptions()),
    "no checkpointing": (False, MemoryOptions()),
    "fp8 base": (True, MemoryOptions(fp8_base=True)),
    "activation offload": (True, MemoryOptions(offload="activations")),
    "fp8 base + offload": (True, MemoryOptions(fp8_base=True, offload="activations")),
}


def rows(quick: bool) -> list[tuple[str, Callable[[], Simulated], int]]:
    """(name, simulation, formula's activation bytes) per figure."""
    out: list[tuple[str, Callable[[], Simulated], int]] = []
    for name, (w, h) in SIZES.items():
        out.append(
            (
                f"expert forward {name}",
                partial(simulate_forward, w, h),
                plan.forward_activation_bytes(A14B, w, h, 81),
            )
        )
    for name, (w, h) in SIZES.items():
        out.append(
            (
                f"VAE decode {name}",
                partial(simulate_vae_decode, w, h),
                plan.decode_activation_bytes(A14B, w, h, 81, tiled=False),
            )
        )
        out.append((f"VAE encode {name}", partial(simulate_vae_encode, w, h), 0))
    if not quick:
        for name in ("720p", "1080p"):
            w, h = SIZES[name]
            out.append(
                (
                    f"VAE decode {name} tiled",
                    partial(simulate_vae_decode, w, h, tiled=True),
                    plan.decode_activation_bytes(A14B, w, h, 81, tiled=True),
                )
            )
        for frames in (33, 81):
            for label, (ckpt, memory) in TRAINING.items():
                e = estimate(
                    SPEC, Window(frames, 480, 832), rank=32, gradient_checkpointing=ckpt, memory=memory
                )
                out.append(
                    (
                        f"training step 480x832x{frames} rank 32, {label}",
                        partial(simulate_training_step, frames, gradient_checkpointing=ckpt, memory=memory),
                        e.total,  # compared with the simulated peak (resident + activations)
                    )
                )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="leave out the slow rows")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    results: list[dict[str, Any]] = []
    print(
        "| what (simulated: FakeTensorMode, CPU) | resident GiB | peak above it GiB | peak GiB | formula GiB | CPU s |"
    )
    print("|---|---|---|---|---|---|")
    for name, run, formula in rows(args.quick):
        sim = run()
        training = name.startswith("training")
        compared = sim.peak_bytes if training else sim.activation_bytes
        row = {
            "what": name,
            "resident_gib": sim.resident_bytes / GIB,
            "activation_gib": sim.activation_bytes / GIB,
            "peak_gib": sim.peak_bytes / GIB,
            "formula_gib": formula / GIB if formula else None,
            "formula_vs_simulated": formula / compared - 1 if formula else None,
            "seconds": sim.seconds,
        }
        results.append(row)
        f = f"{row['formula_gib']:.2f}" if formula else "-"
        print(
            f"| {name} | {row['resident_gib']:.2f} | {row['activation_gib']:.2f} | {row['peak_gib']:.2f} "
            f"| {f} | {sim.seconds:.1f} |",
            flush=True,
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
