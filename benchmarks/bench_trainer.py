"""Benchmark wanforge's LoRA trainer against a plain diffusers + peft loop, on the demo model.

    .venv/bin/python benchmarks/bench_trainer.py                  # compare, defaults below
    .venv/bin/python benchmarks/bench_trainer.py --job            # one full train_lora job, timed

`compare` runs each variant in its own child process (so that peak RSS, from getrusage, belongs
to that variant alone) on the same random-weight model and the same synthetic clips:

- wanforge: `train_lora` (latents, conditions and text encoded once, the encoders parked,
  gradient checkpointing, checkpoints every `--checkpoint-every` steps);
- plain: peft `add_adapter` on the same modules, and every step encodes the clip with the VAE,
  builds the condition and encodes the caption again; no checkpoints, no gradient checkpointing.

`--job` times one whole `train_lora` job (caching included) with the product defaults
(rank 32, lr 2e-4, `--steps` per expert), the figure behind the demo's speed target.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass
class Clip:
    frames: np.ndarray
    caption: str


def make_clips(n: int, frames: int, height: int, width: int) -> list[Clip]:
    rng = np.random.default_rng(0)
    clips = []
    side = max(8, min(height, width) // 3)
    for i in range(n):
        video = np.zeros((frames, height, width, 3), np.uint8)
        y = int(rng.integers(0, height - side))
        for f in range(frames):
            x = int((width - side) * f / max(frames - 1, 1))
            video[f, y : y + side, x : x + side] = rng.integers(150, 256, 3)
        clips.append(Clip(video, f"p3r5on, a square slides to the right, take {i}"))
    return clips


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_wanforge(args: argparse.Namespace, clips: list[Clip]) -> dict[str, Any]:
    from wanforge.engine.demo import build_demo_components
    from wanforge.training.run import TrainParams, train_lora

    components = build_demo_components()
    rss_model = peak_rss_mib()
    params = TrainParams(
        steps=args.steps,
        learning_rate=args.lr,
        lora_rank=args.rank,
        checkpoint_every=args.checkpoint_every,
        eval_samples=0,
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as job:
        result = train_lora(components, clips, params, Path(job), "bench", device="cpu")
    total = time.perf_counter() - started
    train_s = sum(result.metrics[e]["seconds"] for e in ("high_noise", "low_noise"))
    return {
        "total_s": total,
        "train_s": train_s,
        "setup_s": result.metrics["cache_s"],
        "steps_per_s": 2 * args.steps / train_s,
        "rss_model_mib": rss_model,
        "peak_rss_mib": peak_rss_mib(),
    }


def run_plain(args: argparse.Namespace, clips: list[Clip]) -> dict[str, Any]:
    from diffusers import WanImageToVideoPipeline
    from peft import LoraConfig

    from wanforge.engine.demo import build_demo_components
    from wanforge.training.lora import BLOCK_TARGETS

    pipe: Any = WanImageToVideoPipeline(**build_demo_components().as_kwargs())
    rss_model = peak_rss_mib()
    z = pipe.vae.config.z_dim
    mean = torch.tensor(pipe.vae.config.latents_mean).view(1, z, 1, 1, 1)
    inv_std = 1.0 / torch.tensor(pipe.vae.config.latents_std).view(1, z, 1, 1, 1)
    rng = random.Random(0)
    started = time.perf_counter()
    for expert, model in (("high_noise", pipe.transformer), ("low_noise", pipe.transformer_2)):
        model.requires_grad_(False)
        targets = list(BLOCK_TARGETS)
        model.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.rank, target_modules=targets))
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=args.lr)
        for _ in range(args.steps):
            clip = rng.choice(clips)
            with torch.no_grad():
                video = torch.from_numpy(clip.frames).float().div(127.5).sub(1).permute(3, 0, 1, 2)[None]
                x0 = (pipe.vae.encode(video).latent_dist.mode() - mean) * inv_std
                _, cond = pipe.prepare_latents(
                    video[:, :, 0],
                    1,
                    z,
                    video.shape[3],
                    video.shape[4],
                    video.shape[2],
                    torch.float32,
                    torch.device("cpu"),
                    latents=torch.zeros_like(x0),
                )
                text, _ = pipe.encode_prompt(
                    clip.caption, do_classifier_free_guidance=False, max_sequence_length=512
                )
            u = rng.random()
            sigma = 5.0 * u / (1 + 4.0 * u)
            sigma = 0.9 + 0.1 * sigma if expert == "high_noise" else 0.9 * sigma
            noise = torch.randn_like(x0)
            x_t = (1 - sigma) * x0 + sigma * noise
            pred = model(
                hidden_states=torch.cat([x_t, cond], 1),
                timestep=torch.tensor([sigma * 1000]),
                encoder_hidden_states=text,
                return_dict=False,
            )[0]
            loss = torch.nn.functional.mse_loss(pred, noise - x0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    total = time.perf_counter() - started
    return {
        "total_s": total,
        "train_s": total,
        "setup_s": 0.0,
        "steps_per_s": 2 * args.steps / total,
        "rss_model_mib": rss_model,
        "peak_rss_mib": peak_rss_mib(),
    }


def child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    clips = make_clips(args.clips, args.frames, args.height, args.width)
    out = run_wanforge(args, clips) if args.variant == "wanforge" else run_plain(args, clips)
    print("RESULT " + json.dumps(out))


def spawn(args: argparse.Namespace, variant: str, argv: list[str]) -> dict[str, Any]:
    # libgomp's default spin-waiting stalls every parallel region for a time slice when the cores
    # are shared with other processes (10-50x slower on a busy 2-core box); passive waiting does not
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    proc = subprocess.run(
        [sys.executable, __file__, *argv, "--variant", variant],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--steps", type=int, default=20, help="per expert")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--checkpoint-every", type=int, default=25)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--job", action="store_true", help="time one full train_lora job only")
    parser.add_argument("--variant", choices=["wanforge", "plain"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        child(args)
        return
    argv = [a for a in sys.argv[1:] if a != "--job"]
    setup = (
        f"{args.clips} clips of {args.frames} frames at {args.height}x{args.width}, "
        f"{args.steps} steps per expert, rank {args.rank}, {args.threads} threads"
    )
    if args.job:
        r = spawn(args, "wanforge", argv)
        print(
            f"train_lora job ({setup}): {r['total_s']:.1f} s in all, caching {r['setup_s']:.1f} s, "
            f"{r['steps_per_s']:.2f} steps/s, peak RSS {r['peak_rss_mib']:.0f} MiB"
        )
        return
    results = {v: spawn(args, v, argv) for v in ("wanforge", "plain")}
    print(f"demo model, {setup}")
    print(
        f"{'variant':10} {'steps/s':>8} {'train s':>8} {'setup s':>8} {'total s':>8} "
        f"{'model MiB':>10} {'peak MiB':>9}"
    )
    for name, r in results.items():
        print(
            f"{name:10} {r['steps_per_s']:8.2f} {r['train_s']:8.1f} {r['setup_s']:8.1f} {r['total_s']:8.1f} "
            f"{r['rss_model_mib']:10.0f} {r['peak_rss_mib']:9.0f}"
        )
    w, p = results["wanforge"], results["plain"]
    print(
        f"ratios wanforge/plain: steps/s {w['steps_per_s'] / p['steps_per_s']:.2f}x, "
        f"total time {w['total_s'] / p['total_s']:.2f}x, peak RSS {w['peak_rss_mib'] / p['peak_rss_mib']:.2f}x"
    )


if __name__ == "__main__":
    main()
