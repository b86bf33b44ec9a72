"""The tasks a worker runs, built once around the loaded model (this module imports torch)."""

from __future__ import annotations

from functools import partial

from wanforge.config import Settings
from wanforge.engine.generate import Engine
from wanforge.engine.loading import load_pipeline
from wanforge.safety.checker import build_checker
from wanforge.worker.context import Task
from wanforge.worker.generate_task import run_generate
from wanforge.worker.train_task import run_train


def build_tasks(settings: Settings) -> dict[str, Task]:
    loaded = load_pipeline(settings.model, device=settings.device, memory_mode=settings.memory_mode)
    engine = Engine(loaded)
    return {
        "generate": partial(run_generate, engine=engine, checker=build_checker(settings)),
        "train": partial(run_train, loaded=loaded),
    }
