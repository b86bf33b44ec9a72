"""The tasks a worker runs, built once around the loaded model (this module imports torch)."""

from __future__ import annotations

import logging
from functools import partial

from wanforge.config import Settings
from wanforge.engine.adapters import held_files
from wanforge.engine.generate import Engine
from wanforge.engine.loading import LoadedModel, load_pipeline
from wanforge.engine.upscale import LearnedUpscaler, load_upscaler
from wanforge.engine.vae import check_tiling, wants_tiling
from wanforge.engine.warmup import warm_up
from wanforge.safety.checker import build_checker
from wanforge.store.workers import attention_detail
from wanforge.worker.affinity import HeldLoras
from wanforge.worker.context import Task
from wanforge.worker.generate_task import run_generate
from wanforge.worker.train_task import refuse_training, run_train

log = logging.getLogger("wanforge.worker")


class TaskTable(dict[str, Task]):
    """The tasks by kind, and how they run, for the worker row's `detail` (shown on /health);
    `held_loras`: the LoRAs the model holds loaded, as jobs name them (LoRA affinity at claim)."""

    detail: str = ""
    held_loras: HeldLoras | None = None


def load_model(settings: Settings) -> LoadedModel:
    """The model as the settings ask for it: the one load of a worker, `generate` and `train`."""
    return load_pipeline(
        settings.model,
        device=settings.device,
        memory_mode=settings.memory_mode,
        attention=settings.attention_backend,
        fp8=settings.fp8,
        step_cache=settings.step_cache,
        step_cache_threshold=settings.step_cache_threshold,
        compile=settings.compile,
        compile_max_lora_rank=settings.compile_max_lora_rank,
        compile_backend=settings.compile_backend,
        strategy_1080p=settings.strategy_1080p,
        vae_tiling=settings.vae_tiling,
    )


def planned_vae_tiling(setting: str, loaded: LoadedModel) -> str:
    """``WANFORGE_VAE_TILING``, or ``on`` where the memory plan found that the untiled decode of
    the largest served size does not fit beside the resident weights (``auto`` would not tile it)."""
    plan = getattr(loaded, "plan", None)  # a stand-in model (tests) may carry none
    if (
        setting == "auto"
        and plan is not None
        and plan.vae_tiled
        and not wants_tiling("auto", plan.width, plan.height)
    ):
        return "on"
    return setting


def speed_detail(loaded: LoadedModel) -> str:
    """The worker row's `detail`: the attention backend first (what /health parses), then the
    FP8 and compile modes this worker chose (``auto`` resolved)."""
    return f"{attention_detail(loaded.attention_backend)} fp8={loaded.fp8} compile={loaded.compile}"


def build_engine(settings: Settings) -> Engine:
    """The engine of a worker or `generate`: the model, VAE tiling, and the learned upscaler,
    which is read first so a bad WANFORGE_UPSCALER fails at start, before minutes of loading."""
    sr_model = load_upscaler(settings.upscaler) if settings.upscaler is not None else None
    loaded = load_model(settings)
    upscaler = (
        LearnedUpscaler(sr_model, loaded.device, tile=settings.upscaler_tile)
        if sr_model is not None
        else None
    )
    tiling = planned_vae_tiling(settings.vae_tiling, loaded)
    return Engine(loaded, vae_tiling=check_tiling(tiling), upscaler=upscaler)


def build_tasks(settings: Settings) -> TaskTable:
    engine = build_engine(settings)
    loaded = engine.loaded
    plan = getattr(loaded, "plan", None)
    if plan is not None:
        log.info("memory %s", plan.describe())
        for line in (*plan.notes, *plan.advice):
            log.info("memory plan: %s", line)
        if not plan.fits:
            log.warning("memory plan: the largest served job may not fit on this GPU (above)")
    if loaded.compile == "regional" and settings.compile_warmup:
        # before the first claim: no request pays for compiling the served shapes
        seconds = warm_up(loaded, settings.compile_warmup.split(","))
        log.info("compile warm-up: %s", ", ".join(f"{shape} {s:.1f} s" for shape, s in seconds.items()))
    held = HeldLoras(partial(held_files, engine.adapters))
    speed_options = [
        name
        for name, value in (
            ("WANFORGE_FP8", loaded.fp8),
            ("WANFORGE_STEP_CACHE", loaded.step_cache),
            ("WANFORGE_COMPILE", loaded.compile),
        )
        if value != "off"
    ]
    tasks = TaskTable(
        {
            "generate": partial(run_generate, engine=engine, checker=build_checker(settings), held=held),
            "train": (
                partial(refuse_training, options=speed_options)
                if speed_options
                else partial(run_train, loaded=loaded)
            ),
        }
    )
    tasks.detail = speed_detail(loaded)
    tasks.held_loras = held
    return tasks
