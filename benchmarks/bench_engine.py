"""wanforge's engine against a direct diffusers call on the same random-weight models.

Two models: the tiny demo model at its real defaults (40 steps, 81 frames) and a mid-size
one (12-layer, 512-wide experts, a few seconds per step on a CPU core). For each, the
engine's ``render`` (planning, image fitting, a fresh per-resolution scheduler, progress and
cancellation callbacks, the pipeline call) and a plain ``WanImageToVideoPipeline.__call__`` on
the same pipeline object (same weights in memory), seed and settings run interleaved,
alternating which goes first, after one untimed warm-up each; both sides use the same torch
thread count (``--threads``). Prints medians and the ratio engine / diffusers (target <= 1.05),
the largest difference between their frames, and the cost of the engine's upscale to the
output size, which diffusers does not do.

    .venv/bin/python benchmarks/bench_engine.py [--threads 1] [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel
from diffusers.pipelines.wan.pipeline_wan_i2v import WanImageToVideoPipeline
from PIL import Image

from wanforge.engine.demo import build_demo_components, build_scheduler, transformer_config
from wanforge.engine.generate import Engine, GenerationRequest, plan_generation, to_uint8
from wanforge.engine.loading import LoadedModel
from wanforge.engine.profiles import DEMO, ModelProfile
from wanforge.engine.sizing import fit_image
from wanforge.engine.upscale import upscale_frames

PROMPT = "a cat walks across the room while the camera pans slowly to the left"
MID_TRANSFORMER = {"num_layers": 12, "num_attention_heads": 8, "attention_head_dim": 64, "ffn_dim": 2048}


@dataclass(frozen=True)
class Case:
    name: str
    profile: ModelProfile
    mid_size: bool
    rounds: int
    resolution: str = "720p"
    duration_s: int = 5


CASES = [
    Case(
        "tiny (demo, 40 steps, 81 frames, 112x64)", replace(DEMO, cpu_threads=None), mid_size=False, rounds=7
    ),
    Case(
        "mid (12x512 experts, 5 steps, 81 frames, 160x96)",
        replace(DEMO, steps=5, generation_area=160 * 96, cpu_threads=None),
        mid_size=True,
        rounds=3,
    ),
]


def build_pipe(mid_size: bool, shift: float) -> WanImageToVideoPipeline:
    components = build_demo_components()
    if mid_size:
        config = {**transformer_config(), **MID_TRANSFORMER}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            components.transformer = WanTransformer3DModel(**config).eval()
            torch.manual_seed(2)
            components.transformer_2 = WanTransformer3DModel(**config).eval()
    components.scheduler = build_scheduler(shift)
    pipe = WanImageToVideoPipeline(**components.as_kwargs())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def timed(fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    frames = fn()
    return time.perf_counter() - started, frames


def run_case(case: Case, rounds: int, seed: int = 1234) -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (720, 1280, 3), dtype=np.uint8))
    req = GenerationRequest(image, PROMPT, "", case.resolution, seed=seed, duration_s=case.duration_s)
    pipe = build_pipe(case.mid_size, shift=case.profile.flow_shift)
    loaded = LoadedModel(pipe, case.profile, torch.device("cpu"), torch.float32, "gpu", case.name)
    engine = Engine(loaded)
    plan = plan_generation(case.profile, req)
    fitted = fit_image(image, plan.gen_width, plan.gen_height)

    def run_engine() -> np.ndarray:
        frames, _ = engine.render(req, on_step=lambda i, n: None, should_cancel=lambda: False)
        return frames

    def run_diffusers() -> np.ndarray:
        pipe.scheduler = build_scheduler(plan.flow_shift)  # what a plain diffusers user would set up
        out = pipe(
            image=fitted,
            prompt=PROMPT,
            negative_prompt=plan.negative_prompt,
            height=plan.gen_height,
            width=plan.gen_width,
            num_frames=plan.num_frames,
            num_inference_steps=plan.steps,
            guidance_scale=plan.guidance_scale,
            guidance_scale_2=plan.guidance_scale_2,
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="np",
        )
        return np.asarray(out.frames[0], dtype=np.float32)

    run_engine(), run_diffusers()  # warm-up
    times: dict[str, list[float]] = {"engine": [], "diffusers": []}
    outputs: dict[str, np.ndarray] = {}
    for r in range(rounds):
        order = [("engine", run_engine), ("diffusers", run_diffusers)]
        for label, fn in order if r % 2 == 0 else order[::-1]:
            seconds, outputs[label] = timed(fn)
            times[label].append(seconds)

    upscale_s, _ = timed(lambda: upscale_frames(to_uint8(outputs["engine"]), plan.width, plan.height))
    eng, dif = statistics.median(times["engine"]), statistics.median(times["diffusers"])
    diff = float(np.abs(outputs["engine"] - outputs["diffusers"]).max())
    print(f"\n{case.name}")
    print(f"  engine    runs: {', '.join(f'{t:.2f}' for t in times['engine'])} s   median {eng:.2f} s")
    print(f"  diffusers runs: {', '.join(f'{t:.2f}' for t in times['diffusers'])} s   median {dif:.2f} s")
    print(f"  per step (engine median): {eng / plan.steps:.3f} s")
    total = sum(times["engine"]) / sum(times["diffusers"])
    best = min(times["engine"]) / min(times["diffusers"])  # contention only ever adds time
    print(f"  ratio engine/diffusers: median {eng / dif:.3f}, total {total:.3f}, best-of {best:.3f}")
    print(f"  max |engine - diffusers| on float frames: {diff:.2e}")
    print(f"  + upscale {plan.gen_width}x{plan.gen_height} -> {plan.width}x{plan.height}: {upscale_s:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1 is steadiest on a shared box)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="timed runs of each side (7 tiny, 3 mid)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), interleaved rounds")
    for case in CASES:
        run_case(case, args.rounds or case.rounds)


if __name__ == "__main__":
    main()
