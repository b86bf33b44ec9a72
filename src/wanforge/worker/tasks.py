"""The tasks a worker runs, built once around the loaded model (this module imports torch)."""

from __future__ import annotations

from functools import partial

from wanforge.config import Settings
from wanforge.engine.adapters import held_files
from wanforge.engine.generate import Engine
from wanforge.engine.loading import LoadedModel, load_pipeline
from wanforge.safety.checker import build_checker
from wanforge.store.workers import attention_detail
from wanforge.worker.affinity import HeldLoras
from wanforge.worker.context import Task
from wanforge.worker.generate_task import run_generate
from wanforge.worker.train_task import refuse_training, run_train


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
    )


def build_tasks(settings: Settings) -> TaskTable:
    loaded = load_model(settings)
    engine = Engine(loaded)
    held = HeldLoras(partial(held_files, engine.adapters))
    speed_options = [
        name
        for name, value in (("WANFORGE_FP8", loaded.fp8), ("WANFORGE_STEP_CACHE", loaded.step_cache))
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
    tasks.detail = attention_detail(loaded.attention_backend)
    tasks.held_loras = held
    return tasks
