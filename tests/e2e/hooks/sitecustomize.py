"""Test-only hooks that park an e2e worker at a known point (never part of the package).

`tests/e2e/test_recovery.py` starts a server with this folder first on `PYTHONPATH` and
`WANFORGE_TEST_HOOKS=<dir>`; Python imports this file in every process it starts, and only
worker processes (`python -m wanforge worker`, or a Ray worker process of
`tests/e2e/test_ray_cluster.py`, whose nodes each get their own `<dir>`) install the hooks:

- `<dir>/park-load` present: the first worker to load the model takes the file, writes its pid
  to `<dir>/loading`, and waits there (to be killed) instead of loading.
- `<dir>/park-step` holding N: the first worker to finish denoising step N takes the file,
  writes its pid to `<dir>/parked`, and waits until `<dir>/resume` appears.
- `<dir>/park-train-step` holding N: the first worker whose trainer reports step N (after that
  step's checkpoint was written and put in storage) takes the file, writes its pid to
  `<dir>/parked-train`, and waits there (to be killed) until `<dir>/resume-train` appears.
- `<dir>/hold-claims` present: the workers claim no job while it is there.

Each trigger is taken once (renamed atomically), so a restarted worker runs normally.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

WAIT_S = 120.0


def _take(trigger: Path) -> str | None:
    """The trigger's content if this process took it, None if it is absent or already taken."""
    taken = trigger.with_name(trigger.name + f".taken-{os.getpid()}")
    try:
        os.rename(trigger, taken)
    except FileNotFoundError:
        return None
    return taken.read_text()


def _announce(path: Path) -> None:
    partial = path.with_name(path.name + ".part")
    partial.write_text(str(os.getpid()))
    partial.replace(path)


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def _install(hooks: Path) -> None:
    from wanforge.engine.generate import Engine
    from wanforge.training import job, run
    from wanforge.worker import tasks
    from wanforge.worker.loop import WorkerLoop

    build_tasks = tasks.build_tasks

    def parked_build_tasks(settings: Any) -> Any:
        if _take(hooks / "park-load") is not None:
            _announce(hooks / "loading")
            _wait_for(hooks / "never")  # killed here by the test
        return build_tasks(settings)

    tasks.build_tasks = parked_build_tasks

    generate = Engine.generate

    def parked_generate(
        self: Engine, req: Any, on_step: Any = None, should_cancel: Any = None, on_expert: Any = None
    ) -> Any:
        def step(done: int, total: int) -> None:
            if on_step is not None:
                on_step(done, total)
            trigger = hooks / "park-step"
            if trigger.exists() and trigger.read_text().strip() == str(done) and _take(trigger):
                _announce(hooks / "parked")
                _wait_for(hooks / "resume")

        return generate(self, req, on_step=step, should_cancel=should_cancel, on_expert=on_expert)

    Engine.generate = parked_generate  # type: ignore[method-assign]

    train_lora: Any = run.train_lora  # what `job.train_from_zip` calls

    def parked_train_lora(*args: Any, on_progress: Any = None, **kwargs: Any) -> Any:
        def progress(p: Any) -> None:
            if on_progress is not None:
                on_progress(p)  # the worker's: it puts a checkpoint just written in storage
            trigger = hooks / "park-train-step"
            if trigger.exists() and trigger.read_text().strip() == str(p.step) and _take(trigger):
                _announce(hooks / "parked-train")
                _wait_for(hooks / "resume-train")

        return train_lora(*args, on_progress=progress, **kwargs)

    job.train_lora = parked_train_lora  # type: ignore[attr-defined]

    claim = WorkerLoop.claim

    def held_claim(self: WorkerLoop) -> Any:
        return None if (hooks / "hold-claims").exists() else claim(self)

    WorkerLoop.claim = held_claim  # type: ignore[method-assign]


def _install_on_load(hooks: Path) -> None:
    """In a Ray worker process (an actor of `wanforge workers --ray`): install the hooks when a
    worker loop loads its model, so Ray's other worker processes never import torch for them."""
    from wanforge.worker import loop

    build = loop._build_tasks

    def hooked_build(settings: Any) -> Any:
        _install(hooks)
        return build(settings)

    loop._build_tasks = hooked_build


if os.environ.get("WANFORGE_TEST_HOOKS") and "worker" in sys.argv[1:2]:
    _install(Path(os.environ["WANFORGE_TEST_HOOKS"]))
elif os.environ.get("WANFORGE_TEST_HOOKS") and sys.argv[0].endswith("default_worker.py"):
    _install_on_load(Path(os.environ["WANFORGE_TEST_HOOKS"]))
