"""A full-size random-weight Wan2.2-I2V-A14B expert built in place, for the GPU benchmarks.

Speed and memory do not depend on weight values, so no checkpoint is downloaded: the expert is
built by ``wanforge.engine.random_model.build_expert`` (the code behind ``--model random:a14b``)
on the meta device, materialised on the target device in its dtype with ``to_empty`` and filled
in place; the rotary tables are rebuilt on the device. This module adds the shapes, the FLOP
count and the benchmarks' common tail.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from wanforge.engine.random_model import A14B_EXPERT, build_expert

__all__ = ["A14B", "SMOKE", "build_expert"]

# Wan2.2-I2V-A14B, each expert (transformer/config.json of the diffusers checkpoint)
A14B: dict[str, Any] = dict(A14B_EXPERT)
# --smoke: the same classes at a size a CPU runs in a fraction of a second
SMOKE: dict[str, Any] = {
    **A14B,
    "num_attention_heads": 2,
    "attention_head_dim": 12,
    "text_dim": 32,
    "ffn_dim": 32,
    "num_layers": 2,
}
TEXT_TOKENS = 512
# dense bf16 tensor-core peak, TFLOP/s, from the vendors' data sheets (no sparsity)
BF16_PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "H800": 989.4, "A100": 312.0, "L40S": 362.1, "B200": 2250.0}


@dataclass(frozen=True)
class Shape:
    """One denoising input: latent frames and the latent grid of a pixel size."""

    name: str
    frames: int  # video frames (4k+1)
    height: int
    width: int

    @property
    def latent(self) -> tuple[int, int, int]:
        return (self.frames - 1) // 4 + 1, self.height // 8, self.width // 8

    def tokens(self, patch: tuple[int, int, int]) -> int:
        f, h, w = self.latent
        return f // patch[0] * (h // patch[1]) * (w // patch[2])


def forward_flops(config: dict[str, Any], tokens: int, text_tokens: int = TEXT_TOKENS) -> float:
    """Matmul FLOPs of one expert forward (2 per multiply-add): projections, attention, FFN."""
    d = config["num_attention_heads"] * config["attention_head_dim"]
    per_block = (
        2 * tokens * d * d * 4  # self-attention q, k, v, o
        + 2 * 2 * tokens * tokens * d  # Q·Kᵀ and A·V
        + 2 * tokens * d * d * 2  # cross-attention q, o
        + 2 * text_tokens * d * d * 2  # cross-attention k, v (over the text)
        + 2 * 2 * tokens * text_tokens * d  # cross-attention scores and values
        + 2 * tokens * d * config["ffn_dim"] * 2  # FFN up and down
    )
    return float(per_block * config["num_layers"])


def inputs(
    config: dict[str, Any], shape: Shape, device: torch.device, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    f, h, w = shape.latent
    gen = torch.Generator(device=device).manual_seed(1)
    return {
        "hidden_states": torch.randn(
            1, config["in_channels"], f, h, w, generator=gen, device=device, dtype=dtype
        ),
        "encoder_hidden_states": torch.randn(
            1, TEXT_TOKENS, config["text_dim"], generator=gen, device=device, dtype=dtype
        ),
        "timestep": torch.tensor([900.0], device=device),
    }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Seconds per call of ``fn``: the mean of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    return (time.perf_counter() - started) / repeats


def gpu_facts(device: torch.device) -> dict[str, Any]:
    import diffusers

    facts: dict[str, Any] = {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        facts.update(gpu=name, cuda=torch.version.cuda)
        facts["bf16_peak_tflops"] = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)
    return facts


def peak_memory_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def run_and_write(
    parser: argparse.ArgumentParser, args: argparse.Namespace, run: Callable[[argparse.Namespace], Any]
) -> int:
    """The benchmarks' common tail: a GPU unless `--smoke` (one CPU thread then), the run, and
    its result as JSON to `--out` when given."""
    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU, or pass --smoke")
    if args.smoke:
        torch.set_num_threads(1)
    result = run(args)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0
