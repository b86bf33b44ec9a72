"""The GPU acceptance run: the product path at full size with random weights, in one command.

    python benchmarks/gpu_acceptance.py --out acceptance.json           # one H100/H200, <= 8 min
    python benchmarks/gpu_acceptance.py --out /tmp/a.json --smoke       # CPU, tiny model, seconds (CI)
    python benchmarks/gpu_acceptance.py --out a.json --rows api,train   # a subset

It writes JSON to ``--out`` and a markdown table beside it (``--out`` with ``.md``). Rows, in order:

- ``api``: ``wanforge serve --model random:a14b`` in a subprocess (API + worker process, as an
  operator runs it), with random-weight distill LoRA files as ``WANFORGE_ULTRA_FAST_*_LORA`` (rank
  64, the LightX2V distill LoRAs' rank, on every linear of every block, diffusers names, written to
  a temporary directory); one 480p and one 720p ultra-fast job through the HTTP API: upload, submit,
  poll, MP4 (probed), the content check included. Time: submit to completed as the client sees it. Memory: the worker is another
  process, so its row holds the peak of ``nvidia-smi``'s used memory for that process, sampled every
  0.2 s (the caching allocator's reserve included), not ``max_memory_allocated``.
- ``steps``: the standard 40-step profile at 720p through the engine in this process (the model
  loaded as a worker with default settings loads it), stopped after a few steps: seconds per step
  over steps 2..N (each 2 forwards, the CFG pass included; step 1 also holds the text encoder and
  the VAE encode), with the high-noise expert (the first steps of 40 are all above the boundary).
- ``options``: one 720p forward of one expert per FP8 mode (off, storage, compute) x regional
  compile (off, on), each expert built as ``load_pipeline`` builds it (compile with the LoRA slot of
  rank 128); what this device cannot run is a row with the reason. An eager row times its one
  call; a compiled row's first call compiles, so its time is the second call's.
- ``train``: one LoRA training step of one expert at the shipped window (33 frames at 480x832),
  rank 32, gradient checkpointing: ``gpu_train.py``'s step (forward, MSE, backward, AdamW).

Each in-process row resets ``torch.cuda.max_memory_allocated`` and reports its peak beside the
memory plan's prediction for the same work (``wanforge.engine.plan``; "plan: not available" where
it cannot say). ``--smoke`` runs the same code on the CPU with ``random:tiny`` (the demo's sizes,
the demo profile) through the real server and engine; for CI time it compiles with the ``eager``
backend (dynamo's full-graph capture, no code generation) and runs only the 480p API job, with no
content check. The video of random weights is noise, x264's worst case: its encode takes longer
than a real video's would.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import itertools
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import gpu_generate
import gpu_train
from acceptance_plan import Planning, planned, planning_for
from acceptance_server import GpuMemorySampler, input_image, serve, write_distill_loras
from gpu_model import SMOKE, Shape, gpu_facts, inputs, timed

from wanforge.engine import fp8 as fp8_modes
from wanforge.engine.random_model import parse_random_model
from wanforge.engine.sizing import generation_size

ROWS = ("api", "steps", "options", "train")
GIB = 2**30
ULTRA_FAST = {
    "480p": "wavespeed-ai/wan-2.2/i2v-480p-ultra-fast",
    "720p": "wavespeed-ai/wan-2.2/i2v-720p-ultra-fast",
}
DISTILL_RANK = {"a14b": 64, "tiny": 4}


def row(name: str, what: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "row": name,
        "what": what,
        "seconds": None,
        "seconds_are": None,
        "measured_peak_gib": None,
        "measured_how": None,
        "plan_peak_gib": None,
        "plan": None,
        "skipped": None,
        "error": None,
    }
    base.update(fields)
    print(json.dumps(base), flush=True)
    return base


# --- memory: measured and planned ---------------------------------------------------------------


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def measured(device: torch.device) -> dict[str, Any]:
    if device.type != "cuda":
        return {"measured_how": "not applicable (CPU)"}
    return {
        "measured_peak_gib": round(torch.cuda.max_memory_allocated(device) / GIB, 2),
        "measured_how": "torch.cuda.max_memory_allocated",
    }


# --- api: a real server, two ultra-fast jobs -----------------------------------------------------


def api_rows(
    args: argparse.Namespace, device: torch.device, folder: Path, plan: Planning | str
) -> list[dict[str, Any]]:
    from wanforge.training.videos import probe_video

    size = parse_random_model(args.model).size
    high, low = write_distill_loras(args.model, DISTILL_RANK[size], folder)
    env = {
        "WANFORGE_ULTRA_FAST_HIGH_NOISE_LORA": str(high),
        "WANFORGE_ULTRA_FAST_LOW_NOISE_LORA": str(low),
    }
    if args.smoke:  # seconds matter in CI: no content check of the noise, one job (the code is one loop)
        env.update(CUDA_VISIBLE_DEVICES="", WANFORGE_CONTENT_CHECKER="none")
    jobs = list(ULTRA_FAST.items())[:1] if args.smoke else list(ULTRA_FAST.items())
    rows = []
    ready_s, job_s = (60, 60) if args.smoke else (420, 300)
    with (
        serve(args.model, folder, env, ready_s) as (base, key, _pid),
        httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c,
    ):
        image = c.post("/api/v3/media/upload/binary", files={"file": ("in.png", input_image())})
        image_url = image.json()["data"]["download_url"]
        for resolution, model_id in jobs:
            body = {"image": image_url, "prompt": "a cat walks across the room", "seed": 1}
            sampler = GpuMemorySampler() if device.type == "cuda" else contextlib.nullcontext()
            with sampler:
                started = time.monotonic()
                pid = c.post(f"/api/v3/{model_id}", json=body).json()["data"]["id"]
                deadline = started + job_s
                while (data := c.get(f"/api/v3/predictions/{pid}/result").json()["data"])["status"] in (
                    "created",
                    "processing",
                ):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{model_id} not done in {job_s} s")
                    time.sleep(0.1)
                seconds = time.monotonic() - started
            what = f"{model_id} through the API: upload, submit, poll, MP4 ({args.model})"
            if data["status"] != "completed":
                rows.append(row(f"api_{resolution}", what, error=f"{data['status']}: {data['error']}"))
                continue
            video = folder / f"{resolution}.mp4"
            video.write_bytes(c.get(data["outputs"][0]).content)
            info = probe_video(video)
            memory: dict[str, Any] = {"measured_how": "not applicable (CPU)"}
            if isinstance(sampler, GpuMemorySampler) and not sampler.peak_mib:
                memory = {"measured_how": "nvidia-smi gave no reading of the worker process"}
            elif isinstance(sampler, GpuMemorySampler):
                memory = {
                    "measured_peak_gib": round(sampler.peak_mib / 1024, 2),
                    "measured_how": "nvidia-smi used memory of the worker process, sampled (not "
                    "max_memory_allocated: another process)",
                }
            rows.append(
                row(
                    f"api_{resolution}",
                    what,
                    seconds=round(seconds, 2),
                    seconds_are="submit to completed, as the client sees it",
                    inference_ms=data.get("timings", {}).get("inference"),
                    video=f"{info.width}x{info.height}, {info.frames} frames",
                    **memory,
                    **planned(plan, "generate", resolution=resolution, frames=info.frames),
                )
            )
    return rows


# --- in this process: steps, options, train -----------------------------------------------------


def steps_row(args: argparse.Namespace, device: torch.device, plan: Planning | str) -> dict[str, Any]:
    """The standard profile's seconds per step at 720p, through the engine, stopped after N steps."""
    from PIL import Image

    from wanforge.engine.generate import Engine, GenerationCancelled, GenerationRequest
    from wanforge.engine.loading import load_pipeline

    stop_after = 2 if args.smoke else 3
    reset_peak(device)
    loaded = load_pipeline(args.model, device=str(device))
    engine = Engine(loaded)
    marks: list[float] = []
    request = GenerationRequest(
        image=Image.open(io.BytesIO(input_image())),
        prompt="a cat walks across the room",
        negative_prompt="",
        resolution="720p",
        seed=1,
        duration_s=5,
    )
    with contextlib.suppress(GenerationCancelled):
        engine.generate(
            request,
            on_step=lambda done, total: marks.append(time.perf_counter()),
            should_cancel=lambda: len(marks) >= stop_after,
        )
    per_step = [b - a for a, b in itertools.pairwise(marks)]
    steps = loaded.profile.steps
    result = row(
        "steps_720p",
        f"standard profile ({steps} steps, CFG), 720p, {loaded.memory_mode}: steps 2..{stop_after} of {steps}",
        seconds=round(sum(per_step) / len(per_step), 3) if per_step else None,
        seconds_are="per denoising step (2 forwards), high-noise expert; not a whole job",
        memory_mode=loaded.memory_mode,
        **measured(device),
        **planned(plan, "generate", resolution="720p", frames=81),
    )
    del engine, loaded
    return result


def option_rows(args: argparse.Namespace, device: torch.device, plan: Planning | str) -> list[dict[str, Any]]:
    """One 720p forward of one expert per FP8 mode x regional compile."""
    dtype = torch.float32 if args.smoke else torch.bfloat16
    config = SMOKE if args.smoke else parse_a14b_expert()
    if args.smoke:
        shape = Shape("smoke", 5, 32, 48)
    else:
        width, height = generation_size(1920, 1080, "720p")
        shape = Shape("720p", 81, height, width)
    probe = fp8_modes.probe(device)
    rows = []
    for fp8 in ("off", "storage", "compute"):
        for compiled in (False, True):
            name = f"forward_{shape.name}_fp8-{fp8}_compile-{'regional' if compiled else 'off'}"
            what = f"one expert forward, {shape.width}x{shape.height}x{shape.frames}"
            skip = None
            if compiled and fp8 == "storage":
                skip = "the engine refuses WANFORGE_COMPILE=regional with WANFORGE_FP8=storage"
            elif fp8 == "compute" and not probe.compute_ok:
                skip = compute_refusal(probe)
            if skip:
                rows.append(row(name, what, skipped=skip))
                continue
            reset_peak(device)
            expert = feed = call = None
            try:
                expert = gpu_generate.build(
                    config,
                    device,
                    dtype,
                    fp8,
                    compiled=compiled,
                    lora_slot_rank=4 if args.smoke else 128,
                    compile_backend="eager" if args.smoke else "inductor",
                )
                feed = inputs(config, shape, device, dtype)
                with torch.no_grad():
                    call = partial(expert, **feed, return_dict=False)
                    seconds = timed(call, device, 1, warmup=1 if compiled else 0)
            except torch.OutOfMemoryError as exc:
                rows.append(
                    row(name, what, error=f"out of memory: {str(exc).splitlines()[0]}", **measured(device))
                )
                continue
            finally:
                expert = feed = call = None  # every reference, so the next build has the memory
                gpu_generate.free(device)
            rows.append(
                row(
                    name,
                    what,
                    seconds=round(seconds, 4),
                    seconds_are="one forward (compiled: the second call; the first compiles)",
                    **measured(device),
                    **planned(
                        plan, "forward", fp8=fp8, width=shape.width, height=shape.height, frames=shape.frames
                    ),
                )
            )
    return rows


def compute_refusal(probe: fp8_modes.Fp8Platform) -> str:
    """The engine's own words for why FP8 compute cannot run on this device."""
    try:
        fp8_modes.choose_fp8("compute", probe)
    except ValueError as exc:
        return str(exc)
    return "fp8 compute cannot run here"


def parse_a14b_expert() -> dict[str, Any]:
    from wanforge.engine.random_model import A14B_EXPERT

    return dict(A14B_EXPERT)


def train_row(args: argparse.Namespace, device: torch.device, plan: Planning | str) -> dict[str, Any]:
    dtype = torch.float32 if args.smoke else torch.bfloat16
    config = SMOKE if args.smoke else parse_a14b_expert()
    flags = argparse.Namespace(smoke=args.smoke, frames=None, height=None, width=None, rank=32, repeats=1)
    shape = gpu_train.window(flags)
    reset_peak(device)
    step = gpu_train.measure(flags, "checkpointing", device, dtype, config, shape)
    gc.collect()
    return row(
        "train_step",
        f"one LoRA training step of one expert, {shape.width}x{shape.height}x{shape.frames}, rank 32, "
        "gradient checkpointing",
        seconds=step["s_per_step"],
        seconds_are="one step (forward, loss, backward, AdamW), after an untimed one",
        error=step["error"],
        preflight_estimate_gib=step["estimate_gib"],
        **measured(device),
        **planned(plan, "train", frames=shape.frames, height=shape.height, width=shape.width, rank=32),
    )


# --- the run and its table ----------------------------------------------------------------------


def markdown(result: dict[str, Any]) -> str:
    facts = result["facts"]
    lines = [
        f"GPU acceptance run on **{facts.get('gpu') or facts['device']}** "
        f"(torch {facts['torch']}, diffusers {facts['diffusers']}, model `{result['model']}`"
        f"{', smoke run' if result['smoke'] else ''}), {result['total_s']} s in all.",
        "",
        "| row | what | seconds | seconds are | measured peak GiB | plan peak GiB | note |",
        "|---|---|---:|---|---:|---:|---|",
    ]
    for r in result["rows"]:
        note = "; ".join(
            str(v)
            for v in (r["skipped"] and f"skipped: {r['skipped']}", r["error"], r["measured_how"], r["plan"])
            if v
        )
        cells = [
            r["row"],
            r["what"],
            "" if r["seconds"] is None else str(r["seconds"]),
            r["seconds_are"] or "",
            "" if r["measured_peak_gib"] is None else str(r["measured_peak_gib"]),
            "" if r["plan_peak_gib"] is None else str(r["plan_peak_gib"]),
            note,
        ]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device("cpu" if args.smoke else "cuda")
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    folder = Path(tempfile.mkdtemp(prefix="wanforge-acceptance-"))
    try:  # first: the card's free memory before anything loads
        plan: Planning | str = planning_for(args.model, device)
    except Exception as exc:  # no plan must not cost the measurements
        plan = f"plan: not available ({type(exc).__name__}: {exc})"
    steps: dict[str, Callable[[], list[dict[str, Any]]]] = {
        "api": lambda: api_rows(args, device, folder, plan),  # first: the server needs the whole GPU
        "steps": lambda: [steps_row(args, device, plan)],
        "options": lambda: option_rows(args, device, plan),
        "train": lambda: [train_row(args, device, plan)],
    }
    phase_s: dict[str, float] = {}
    try:
        for name in ROWS:
            if name in args.rows:
                begun = time.monotonic()
                try:
                    rows.extend(steps[name]())
                except Exception as exc:  # one failed row must not lose the others' figures
                    rows.append(row(name, "failed", error=f"{type(exc).__name__}: {exc}"))
                gc.collect()
                phase_s[name] = round(time.monotonic() - begun, 1)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "facts": gpu_facts(device),
        "model": args.model,
        "smoke": args.smoke,
        "total_s": round(time.monotonic() - started, 1),
        "phase_s": phase_s,  # wall time of each group of rows, set-up included
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="the JSON results; the table goes to .md")
    parser.add_argument("--smoke", action="store_true", help="CPU, random:tiny, seconds (CI)")
    parser.add_argument(
        "--rows",
        type=lambda text: text.split(","),
        default=list(ROWS),
        help=f"comma-separated, of {', '.join(ROWS)} (default: all)",
    )
    parser.add_argument("--model", help="the model source (default: random:a14b; --smoke: random:tiny)")
    args = parser.parse_args(argv)
    if unknown := [r for r in args.rows if r not in ROWS]:
        parser.error(f"unknown rows {unknown}; expected some of {list(ROWS)}")
    args.model = args.model or ("random:tiny" if args.smoke else "random:a14b")
    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU, or pass --smoke")
    if args.smoke:
        torch.set_num_threads(1)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 1 if any(r["error"] for r in result["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
