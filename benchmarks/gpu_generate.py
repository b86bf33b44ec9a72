"""Generation speed of a full-size Wan2.2-I2V-A14B on one GPU, with random weights (no download).

    python benchmarks/gpu_generate.py                  # on a GPU: every resolution, profile, option
    python benchmarks/gpu_generate.py --smoke          # on the CPU, tiny config, seconds (CI)
    python benchmarks/gpu_generate.py --out results.json
    python benchmarks/gpu_generate.py --fp8 off,compute --lora-slot-rank 0   # a subset of the options
    python benchmarks/gpu_generate.py --resolutions 720p --compile off --attention native

Per resolution (480p, 720p, native 1080p; 81 frames) and option (each FP8 mode this GPU can run:
off, storage, and compute on sm89+ with torchao; each attention backend this GPU can run; regional
compile off/on, compiled with the engine's LoRA slot of --lora-slot-rank, as a worker with
WANFORGE_COMPILE=regional runs; fp8 storage is not compiled: the engine refuses that pair) it measures one expert forward (seconds), its achieved TFLOP/s
against the GPU's dense bf16 peak, the peak GPU memory, and one VAE decode of the whole video
in float32 as the engine runs it (plain and tiled). Per profile it reports s/step (standard: 2
forwards a step, the CFG pass included; ultra-fast: 1) and ``denoise_decode_s`` = steps x s/step
+ the VAE decode. That is not a job's end to end time: the text encoder, the VAE encode of the
image condition and any offload transfers are left out (``gpu_acceptance.py`` times whole jobs
through the API). Both experts have the same shape, so one is built at a time, in bf16 directly
on the GPU, after the previous one (and its compiled blocks) is freed.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from functools import partial
from pathlib import Path
from typing import Any

import torch
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gpu_model import (
    A14B,
    SMOKE,
    Shape,
    build_expert,
    forward_flops,
    gpu_facts,
    inputs,
    peak_memory_gib,
    reset_peak,
    run_and_write,
    timed,
)

from wanforge.engine import fp8 as fp8_modes
from wanforge.engine.attention import available_backends, probe, set_backend
from wanforge.engine.compile import compile_experts, prepare_slots
from wanforge.engine.sizing import generation_size

PROFILES = {
    "standard": {"steps": 40, "forwards_per_step": 2},
    "ultra_fast": {"steps": 4, "forwards_per_step": 1},
}


RESOLUTIONS = ("480p", "720p", "1080p")


def shapes(smoke: bool, resolutions: list[str]) -> list[Shape]:
    if smoke:
        return [Shape("smoke", frames=5, height=32, width=48)]
    out = []
    for resolution in resolutions:
        width, height = generation_size(1920, 1080, resolution)  # a 16:9 input image
        out.append(Shape(resolution if resolution != "1080p" else "1080p-native", 81, height, width))
    return out


def build_vae(smoke: bool, device: torch.device) -> Any:
    """The VAE in float32, as the engine runs it (a bf16 decode bands the colours)."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import AutoencoderKLWan

    from wanforge.engine.random_model import A14B_VAE

    if smoke:
        from wanforge.engine.demo import build_vae as tiny

        module: torch.nn.Module = tiny()
        return module.to(device=device, dtype=torch.float32)
    return AutoencoderKLWan(**A14B_VAE).to(device, torch.float32).eval()


def fp8_choices(device: torch.device, smoke: bool) -> list[str]:
    """The FP8 modes this machine runs: off and storage anywhere (only off in the smoke run, which
    stays one row), compute where torchao's float8 runs."""
    if smoke:
        return ["off"]
    return ["off", "storage"] + (["compute"] if fp8_modes.probe(device).compute_ok else [])


def free(device: torch.device) -> None:
    """Give the memory of dropped experts and their compiled graphs back before the next build."""
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def build(
    config: dict[str, Any],
    device: torch.device,
    dtype: torch.dtype,
    fp8: str,
    *,
    compiled: bool = False,
    lora_slot_rank: int = 0,
    compile_backend: str = "inductor",
    attention: str = "native",
) -> WanTransformer3DModel:
    """An expert built in ``dtype`` with the options applied in the order ``load_pipeline``
    applies them: fp8 storage, the compile LoRA slot, fp8 compute (torchao), the attention
    backend, regional compile."""
    expert = build_expert(config, device, dtype)
    if fp8 == "storage":
        expert.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)
    if compiled:
        prepare_slots([expert], max_lora_rank=lora_slot_rank, dtype=dtype)
    if fp8 == "compute":
        fp8_modes.apply_fp8_compute([expert])
    set_backend(_Expert(expert), attention)  # type: ignore[arg-type]
    if compiled:
        compile_experts([expert], backend=compile_backend)
    return expert


class _Expert:
    """Lets the attention backend be set on one expert the way the engine sets it on a pipeline."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.transformer = model
        self.transformer_2 = None


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device("cpu" if args.smoke else "cuda")
    dtype = torch.float32 if args.smoke else torch.bfloat16
    config = SMOKE if args.smoke else A14B
    facts = gpu_facts(device)
    peak = facts.get("bf16_peak_tflops")
    repeats = 1 if args.smoke else args.repeats
    backends = args.attention or (["native"] if args.smoke else available_backends(probe(device)))
    compiles = [c == "regional" for c in args.compile] if args.compile else [False, not args.smoke]
    compiles = list(dict.fromkeys(compiles))
    chosen_fp8 = args.fp8.split(",") if args.fp8 else fp8_choices(device, args.smoke)
    rows: list[dict[str, Any]] = []
    expert: WanTransformer3DModel | None = None
    vae = build_vae(args.smoke, device)
    for shape in shapes(args.smoke, args.resolutions):
        z = torch.randn(1, 16, *shape.latent, device=device, dtype=torch.float32)
        vae_s: dict[str, float] = {}
        for tiled in (False, True):
            vae.enable_tiling() if tiled else vae.disable_tiling()
            reset_peak(device)
            with torch.no_grad():
                vae_s["tiled" if tiled else "plain"] = timed(partial(vae.decode, z), device, 1, warmup=0)
        for fp8, backend, compiled in [
            (f, b, c) for f in chosen_fp8 for b in backends for c in compiles if not (c and f == "storage")
        ]:
            # a fresh expert per option (the compile slot goes in before torchao, as at load);
            # every reference to the last one is dropped first, so two never share the GPU
            expert = None
            free(device)
            expert = build(
                config,
                device,
                dtype,
                fp8,
                compiled=compiled,
                lora_slot_rank=args.lora_slot_rank,
                attention=backend,
            )
            model = expert
            feed = inputs(config, shape, device, dtype)
            reset_peak(device)
            with torch.no_grad():
                forward_s = timed(partial(model, **feed, return_dict=False), device, repeats)
            flops = forward_flops(config, shape.tokens(config["patch_size"]))
            tflops = flops / forward_s / 1e12
            row = {
                "resolution": shape.name,
                "size": f"{shape.width}x{shape.height}x{shape.frames}",
                "fp8": fp8,
                "attention": backend,
                "compile": compiled,
                "lora_slot_rank": args.lora_slot_rank if compiled else None,
                "forward_s": round(forward_s, 4),
                "tflops": round(tflops, 1),
                "mfu": round(tflops / peak, 3) if peak else None,
                "peak_memory_gib": peak_memory_gib(device),
                "vae_decode_s": {k: round(v, 3) for k, v in vae_s.items()},
                "profiles": {
                    name: {
                        "steps": p["steps"],
                        "s_per_step": round(p["forwards_per_step"] * forward_s, 4),
                        "denoise_decode_s": round(
                            p["steps"] * p["forwards_per_step"] * forward_s + vae_s["plain"], 2
                        ),
                    }
                    for name, p in PROFILES.items()
                },
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            del model, feed
    return {"facts": facts, "smoke": args.smoke, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny config, one repeat (CI)")
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards per measurement")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument(
        "--fp8", help="comma-separated FP8 modes to run (off, storage, compute); default: all this GPU runs"
    )
    parser.add_argument(
        "--resolutions",
        type=lambda text: text.split(","),
        default=list(RESOLUTIONS),
        help="comma-separated, of 480p, 720p, 1080p (native 1080p; default: all)",
    )
    parser.add_argument(
        "--compile",
        type=lambda text: text.split(","),
        help="comma-separated, of off, regional (default: both; --smoke: off)",
    )
    parser.add_argument(
        "--attention",
        type=lambda text: text.split(","),
        help="comma-separated attention backends (default: each this GPU runs)",
    )
    parser.add_argument(
        "--lora-slot-rank",
        type=int,
        default=128,
        help="rank of the LoRA slot compiled in (WANFORGE_COMPILE_MAX_LORA_RANK; 0: none)",
    )
    args = parser.parse_args(argv)
    if unknown := [r for r in args.resolutions if r not in RESOLUTIONS]:
        parser.error(f"unknown resolutions {unknown}; expected some of {list(RESOLUTIONS)}")
    if args.compile and (unknown := [c for c in args.compile if c not in ("off", "regional")]):
        parser.error(f"unknown compile modes {unknown}; expected off, regional")
    return run_and_write(parser, args, run)


if __name__ == "__main__":
    sys.exit(main())
