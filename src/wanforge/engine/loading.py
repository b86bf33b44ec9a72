"""Loading the pipeline: the demo model built in code, a local diffusers-format checkpoint, or
random weights at a real size (``random:a14b``)."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from diffusers.models.autoencoders.autoencoder_kl_wan import AutoencoderKLWan
from diffusers.pipelines.wan.pipeline_wan_i2v import WanImageToVideoPipeline

from wanforge.engine import fp8 as fp8_choice
from wanforge.engine.attention import (
    AttentionBackend,
    Platform,
    available_backends,
    choose_backend,
    probe,
    set_backend,
)
from wanforge.engine.compile import CompileMode, LoraSlots, check_compile, compile_experts, prepare_slots
from wanforge.engine.fp8 import Fp8Mode, apply_fp8_compute
from wanforge.engine.plan import MAX_FRAMES, Card, MemoryMode, ModelSizes, Plan, plan_generation
from wanforge.engine.plan import PREFERENCE as MODE_PREFERENCE
from wanforge.engine.plan import Options as PlanOptions
from wanforge.engine.profiles import DEMO, WAN22_I2V_A14B, ModelProfile, Strategy1080p
from wanforge.engine.speed import (
    DEFAULT_STEP_CACHE_THRESHOLD,
    StepCache,
    apply_fp8_storage,
    apply_step_cache,
    check_options,
    experts,
)

if TYPE_CHECKING:
    from wanforge.engine.random_model import RandomComponents

# the memory modes, most resident first (engine/plan.py chooses one)
MEMORY_MODES: tuple[MemoryMode, ...] = MODE_PREFERENCE

DEMO_MODEL = "demo"
RANDOM_PREFIX = "random:"  # random weights at a named size: engine/random_model.py
REQUIRED_COMPONENTS = ("tokenizer", "text_encoder", "vae", "scheduler", "transformer", "transformer_2")


class ModelLoadError(Exception):
    """The model directory is missing, incomplete or not a Wan 2.2 I2V A14B checkpoint."""


@dataclass
class LoadedModel:
    pipe: WanImageToVideoPipeline
    profile: ModelProfile
    device: torch.device
    dtype: torch.dtype
    memory_mode: MemoryMode
    name: str
    # the diffusers attention backend both experts run (see engine/attention.py)
    attention_backend: AttentionBackend = "native"
    # the backend LoRA training runs (one with a backward pass: see attention.training_backend)
    training_attention_backend: AttentionBackend = "native"
    # memory and speed options set on both experts (see engine/speed.py)
    fp8: Fp8Mode = "off"
    step_cache: StepCache = "off"
    # regional compile of both experts, and their LoRA slots (see engine/compile.py)
    compile: CompileMode = "off"
    lora_slots: LoraSlots | None = None
    # the memory plan the load applied (engine/plan.py): the worker logs it
    plan: Plan | None = None


def resolve_device(device: str | None) -> torch.device:
    """``device`` as a ``torch.device``; ``None`` picks CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def validate_model_dir(path: Path) -> dict[str, Any]:
    """Check that ``path`` holds a diffusers Wan 2.2 I2V checkpoint; return its ``model_index.json``."""
    if not path.exists():
        raise ModelLoadError(f"model directory {path} does not exist")
    if not path.is_dir():
        raise ModelLoadError(f"model path {path} is not a directory")
    index_path = path / "model_index.json"
    if not index_path.is_file():
        raise ModelLoadError(f"{path} has no model_index.json (expected a diffusers-format checkpoint)")
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{index_path} is not valid JSON: {exc}") from exc
    if not isinstance(index, dict):
        raise ModelLoadError(f"{index_path} is not a JSON object")

    problems: list[str] = []
    class_name = index.get("_class_name")
    if class_name != "WanImageToVideoPipeline":
        problems.append(f"_class_name is {class_name!r}, expected 'WanImageToVideoPipeline'")
    for name in REQUIRED_COMPONENTS:
        entry = index.get(name)
        if not isinstance(entry, list) or len(entry) != 2 or entry[1] is None:
            problems.append(f"model_index.json has no {name!r} component")
        elif not (path / name).is_dir():
            problems.append(f"component folder {name}/ is missing")
        elif name not in ("tokenizer", "scheduler") and not (path / name / "config.json").is_file():
            problems.append(f"{name}/config.json is missing")
    if index.get("boundary_ratio") is None:
        problems.append("boundary_ratio is missing (a Wan 2.2 A14B checkpoint switches experts at it)")
    if problems:
        raise ModelLoadError(
            f"{path} is not a usable Wan2.2-I2V-A14B-Diffusers checkpoint: " + "; ".join(problems)
        )
    return index


def module_bytes(module: torch.nn.Module) -> int:
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def _pipeline_modules(pipe: WanImageToVideoPipeline) -> dict[str, torch.nn.Module]:
    return {k: v for k, v in pipe.components.items() if isinstance(v, torch.nn.Module)}


def _place(pipe: WanImageToVideoPipeline, device: torch.device, memory_mode: MemoryMode) -> None:
    if memory_mode == "gpu":
        pipe.to(device)
    elif memory_mode == "text_encoder_offload":
        # the experts and the VAE resident; the text encoder streamed leaf by leaf from pinned CPU
        # memory for its one forward per job (diffusers moves the excluded modules to the device)
        pipe.enable_group_offload(
            onload_device=device,
            offload_device=torch.device("cpu"),
            offload_type="leaf_level",
            use_stream=True,
            exclude_modules=["transformer", "transformer_2", "vae"],
        )
    elif memory_mode == "model_offload":
        pipe.enable_model_cpu_offload(device=device)
    else:
        # Leaf-level groups streamed on a side CUDA stream; the VAE is small and stays resident.
        pipe.enable_group_offload(
            onload_device=device,
            offload_device=torch.device("cpu"),
            offload_type="leaf_level",
            use_stream=True,
            exclude_modules=["vae"],
        )
        pipe.vae.to(device)


def _check_request(device: torch.device, memory_mode: str | None) -> MemoryMode | None:
    """Refuse a bad device or memory mode before any weights are read."""
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} requested but CUDA is not available")
    if memory_mode is None:
        return None
    if memory_mode not in MEMORY_MODES:
        raise ValueError(f"unknown memory_mode {memory_mode!r}; expected one of {list(MEMORY_MODES)}")
    if device.type != "cuda" and memory_mode != "gpu":
        raise ValueError(f"memory_mode {memory_mode!r} needs a CUDA device, got {device}")
    return memory_mode


def device_card(device: torch.device, platform: Platform, fp8_platform: fp8_choice.Fp8Platform) -> Card:
    """This device as the memory plan sees it: its free and total memory now, its compute
    capability, and the attention backends that passed their trial run."""
    available = available_backends(platform)
    libraries = {
        "cudnn": "_native_cudnn" in available,
        "flash_attn_3": "_flash_3" in available,
        "sageattention": "sage" in available,
        "torchao": fp8_platform.torchao,
    }
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return Card(
            torch.cuda.get_device_name(device),
            total,
            free,
            torch.cuda.get_device_capability(device),
            **libraries,
        )
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Card("cpu", memory, memory, None, **libraries)


def plan_load(pipe: WanImageToVideoPipeline, card: Card, options: PlanOptions, profile: ModelProfile) -> Plan:
    """The memory plan for this pipeline on ``card``, for the largest job the worker serves: its
    profile's 1080p tier (720p upscaled, or native 1080p) at the longest duration (129 frames)."""
    resolution = profile.generation_resolution("1080p")
    return plan_generation(card, ModelSizes.from_pipeline(pipe), options, resolution, MAX_FRAMES)


def _load_demo() -> WanImageToVideoPipeline:
    from wanforge.engine.demo import build_demo_components  # only a demo server builds one

    return WanImageToVideoPipeline(**build_demo_components().as_kwargs())


def _load_random(model: str, dtype: torch.dtype) -> tuple[WanImageToVideoPipeline, RandomComponents]:
    """``random:<size>``: the components on the meta device (made real once the memory mode is
    known, see :func:`wanforge.engine.random_model.materialize_for_mode`)."""
    from wanforge.engine import random_model  # only a random-weight server builds one

    try:
        spec = random_model.parse_random_model(model)
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from exc
    parts = random_model.build_meta_components(spec, dtype)
    return WanImageToVideoPipeline(**parts.as_kwargs()), parts


def _load_checkpoint(path: Path, dtype: torch.dtype) -> WanImageToVideoPipeline:
    validate_model_dir(path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*`dtype`.*", category=FutureWarning)
        try:
            # The VAE stays in float32, as in the reference code: decoding in bf16 bands the colours.
            vae = AutoencoderKLWan.from_pretrained(path, subfolder="vae", torch_dtype=torch.float32)
            pipe = WanImageToVideoPipeline.from_pretrained(path, vae=vae, torch_dtype=dtype)
        except Exception as exc:  # corrupt or mismatched weights surface as many error types
            raise ModelLoadError(f"failed to load {path}: {exc}") from exc
    return pipe


def load_pipeline(
    model: str,
    *,
    device: str | None = None,
    memory_mode: str | None = None,
    profile: ModelProfile | None = None,
    attention: str = "auto",
    fp8: str = "off",
    step_cache: str = "off",
    step_cache_threshold: float = DEFAULT_STEP_CACHE_THRESHOLD,
    compile: str = "off",
    compile_max_lora_rank: int = 128,
    compile_backend: str = "inductor",
    strategy_1080p: Strategy1080p | None = None,
    vae_tiling: str = "auto",
) -> LoadedModel:
    """Load ``model``: ``"demo"``, the path of a local ``Wan2.2-I2V-A14B-Diffusers`` directory, or
    ``"random:a14b"`` (the real sizes with random weights made on the device; see
    :mod:`wanforge.engine.random_model`).

    The checkpoint runs in bfloat16 on CUDA and float32 on the CPU; the demo always in float32.
    ``memory_mode`` (CUDA only): ``"gpu"`` keeps everything resident, ``"model_offload"`` keeps
    the idle models (the other expert, the text encoder) on the CPU, ``"group_offload"`` streams
    layers from the CPU; ``None`` picks from the free GPU memory. ``profile`` overrides the
    sampling defaults (by default the demo or the A14B profile). ``attention``: ``"auto"`` (the
    fastest backend this device can run) or a backend name (see :mod:`wanforge.engine.attention`).
    ``fp8`` (``"off"``, ``"storage"``, ``"compute"`` or ``"auto"``: see :mod:`wanforge.engine.fp8`)
    and ``step_cache`` (``"off"`` or ``"first_block"``, with ``step_cache_threshold``): see
    :mod:`wanforge.engine.speed`. ``compile`` (``"off"`` or ``"regional"``, with the LoRA slot rank
    ``compile_max_lora_rank`` and the ``torch.compile`` ``compile_backend``): see
    :mod:`wanforge.engine.compile`. ``strategy_1080p`` overrides the profile's way to the 1080p
    tier (``"upscale"`` from 720p, or ``"native"``). ``vae_tiling`` is the setting the engine runs
    with (the plan counts the decode it makes).

    What ``auto`` and an unset memory mode become is one decision, the memory plan
    (:func:`wanforge.engine.plan.plan_generation`) for this device and the largest job the worker
    serves, taken once the components' sizes are known and applied here in one pass; the plan is
    ``LoadedModel.plan``.
    """
    target = resolve_device(device)
    requested_mode = _check_request(target, memory_mode)
    fp8_requested, cache = check_options(fp8, step_cache, step_cache_threshold)
    compiled = check_compile(compile, compile_max_lora_rank)
    fp8_platform = fp8_choice.probe(target)
    # what cannot run is refused before any weights are read; `auto` is the plan's, after loading
    fp8_asked = fp8_choice.choose_fp8(fp8_requested, fp8_platform, compiled=compiled == "regional")
    requested_mode = _check_combinations(
        fp8_asked if fp8_requested != "auto" else "off", compiled, cache, requested_mode
    )
    platform = probe(target)  # on a GPU: each candidate backend runs once (attention.trial_run)
    backend = choose_backend(attention, platform)
    random_parts: RandomComponents | None = None
    if model == DEMO_MODEL:
        pipe = _load_demo()
        dtype = torch.float32
        chosen_profile = profile or DEMO
        name = DEMO_MODEL
    elif model.startswith(RANDOM_PREFIX):
        dtype = torch.bfloat16 if target.type == "cuda" else torch.float32
        pipe, random_parts = _load_random(model, dtype)
        chosen_profile = profile or random_parts.spec.profile
        name = model
    else:
        path = Path(model).expanduser()
        dtype = torch.bfloat16 if target.type == "cuda" else torch.float32
        from wanforge.engine import checkpoints  # a model file or the official Wan layout

        pipe = checkpoints.load(path, dtype) if checkpoints.handles(path) else _load_checkpoint(path, dtype)
        chosen_profile = profile or WAN22_I2V_A14B
        name = path.name or str(path)

    if strategy_1080p is not None:
        chosen_profile = replace(chosen_profile, strategy_1080p=strategy_1080p)
    options = PlanOptions(
        memory_mode=requested_mode,
        fp8=fp8_requested,
        attention=backend,
        compile=compiled,
        step_cache=cache,
        vae_tiling=vae_tiling,
    )
    plan = plan_load(pipe, device_card(target, platform, fp8_platform), options, chosen_profile)
    fp8_mode = plan.fp8
    mode: MemoryMode = "gpu" if plan.memory_mode == "trainer" else plan.memory_mode  # never "trainer" here
    if random_parts is not None:  # sized on the meta device; made real where the mode keeps them
        from wanforge.engine.random_model import materialize_for_mode

        materialize_for_mode(random_parts, target, mode, fp8=fp8_mode)
    pipe.register_to_config(boundary_ratio=chosen_profile.boundary_ratio)
    pipe.set_progress_bar_config(disable=True)
    if fp8_mode == "storage":  # before placement: the experts reach the device already in fp8
        apply_fp8_storage(pipe, compute_dtype=dtype)
    if cache == "first_block":
        apply_step_cache(pipe, step_cache_threshold)
    slots = None
    if compiled == "regional":  # the LoRA slots before torchao (compile.prepare_slots says why)
        slots = prepare_slots(experts(pipe), max_lora_rank=compile_max_lora_rank, dtype=dtype)
    if fp8_mode == "compute":
        # torchao converts weights where they are (on the GPU): one expert at a time, so the peak is
        # one bf16 expert beside the converted other (the plan checked it fits), then the rest
        # follows (memory mode gpu or text_encoder_offload: both experts resident)
        for expert in experts(pipe):
            torch.nn.Module.to(expert, target)
            apply_fp8_compute([expert])
    _place(pipe, target, mode)
    if backend != "native" or attention == "native":  # unset, the experts already run native SDPA
        set_backend(pipe, backend)
    if compiled == "regional":  # last: the graphs see the final modules
        compile_experts(experts(pipe), backend=compile_backend)
    return LoadedModel(
        pipe=pipe,
        profile=chosen_profile,
        device=target,
        dtype=dtype,
        memory_mode=mode,
        name=name,
        attention_backend=backend,
        training_attention_backend=plan.training_attention,
        fp8=fp8_mode,
        step_cache=cache,
        compile=compiled,
        lora_slots=slots,
        plan=plan,
    )


def _check_combinations(
    fp8: Fp8Mode, compiled: CompileMode, cache: StepCache, memory_mode: MemoryMode | None
) -> MemoryMode | None:
    """Refuse option pairs that cannot run together; FP8 compute keeps both experts on the GPU."""
    if compiled == "regional" and memory_mode == "group_offload":
        raise ValueError(
            "WANFORGE_COMPILE=regional cannot run with WANFORGE_MEMORY_MODE=group_offload (its per-layer "
            "hooks break the compiled blocks' graphs); use gpu or model_offload"
        )
    # both measured: dynamo's full graph of a block cannot capture these diffusers hooks
    if compiled == "regional" and cache != "off":
        raise ValueError(
            "WANFORGE_COMPILE=regional cannot run with WANFORGE_STEP_CACHE (its hooks on the blocks cannot "
            "be compiled); set one of them to off"
        )
    if compiled == "regional" and fp8 == "storage":
        raise ValueError(
            "WANFORGE_COMPILE=regional cannot run with WANFORGE_FP8=storage (its per-layer casting hooks "
            "cannot be compiled); use WANFORGE_FP8=compute (sm89+) or off"
        )
    if fp8 == "compute" and memory_mode not in (None, "gpu", "text_encoder_offload"):
        raise ValueError(
            f"WANFORGE_FP8=compute keeps both experts on the GPU (at about half their bf16 size); "
            f"WANFORGE_MEMORY_MODE={memory_mode} cannot be used with it: use gpu or text_encoder_offload, "
            "or WANFORGE_FP8=storage"
        )
    return memory_mode


@contextmanager
def exclusive_placement(loaded: LoadedModel) -> Iterator[None]:
    """Lift the memory mode's offload hooks while a caller moves modules itself (LoRA training).

    ``gpu`` needs nothing. ``text_encoder_offload`` needs nothing either: the experts and the VAE
    are plain resident modules the trainer moves itself, and the text encoder's group-offload hooks
    load their pinned CPU copies for each forward and put them back after, whatever device its
    ``.to()`` moved it to (the latent cache moves it to the device and back). ``model_offload``
    drops accelerate's hooks, parks every module on the CPU (the trainer moves the active expert to
    the device), and re-installs the hooks after. ``group_offload`` hooks on the experts cannot be
    lifted safely, so it is refused with a clear message.
    """
    pipe = loaded.pipe
    if loaded.memory_mode == "group_offload":
        raise ModelLoadError(
            "LoRA training needs WANFORGE_MEMORY_MODE=gpu, text_encoder_offload or model_offload; this worker "
            "runs group_offload"
        )
    if loaded.memory_mode != "model_offload":
        yield
        return
    pipe.remove_all_hooks()
    pipe.to("cpu")
    try:
        yield
    finally:
        _place(pipe, loaded.device, loaded.memory_mode)
