"""Run real generate jobs through the worker loop on the demo model at its smallest (1 step,
5 frames at 1 fps: about half a second a job), with a recorder of what the engine was asked."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field, replace
from functools import cache, partial
from typing import Any

from PIL import Image

from wanforge.config import Settings
from wanforge.engine.generate import (
    CancelCheck,
    Engine,
    ExpertCallback,
    GenerationRequest,
    GenerationResult,
    StepCallback,
)
from wanforge.engine.loading import load_pipeline
from wanforge.safety.checker import ContentChecker
from wanforge.store import jobs
from wanforge.store.db import Database
from wanforge.worker.generate_task import run_generate
from wanforge.worker.loop import WorkerLoop

MODEL = "alibaba/wan-2.2/i2v-plus-480p"


@cache
def _loaded() -> Any:
    loaded = load_pipeline("demo")
    return replace(loaded, profile=replace(loaded.profile, steps=1, fps=1))


@dataclass
class RecordingEngine:
    """The demo engine, noting every request it is given."""

    engine: Engine = field(default_factory=lambda: Engine(_loaded()))
    requests: list[GenerationRequest] = field(default_factory=list)

    def generate(
        self,
        req: GenerationRequest,
        on_step: StepCallback | None = None,
        should_cancel: CancelCheck | None = None,
        on_expert: ExpertCallback | None = None,
    ) -> GenerationResult:
        self.requests.append(req)
        return self.engine.generate(req, on_step=on_step, should_cancel=should_cancel, on_expert=on_expert)


def png_data_uri(color: tuple[int, int, int] = (90, 120, 200), size: tuple[int, int] = (64, 48)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def submit(db: Database, **fields: Any) -> str:
    body = {"image": png_data_uri(), "prompt": "the camera pans left", "seed": 7, **fields}
    row = jobs.create_prediction(
        db, model=MODEL, kind="generate", input=body, server_base="http://h", max_attempts=3
    )
    return row.id


def run_one(
    settings: Settings, db: Database, engine: RecordingEngine, checker: ContentChecker | None
) -> WorkerLoop:
    loop = WorkerLoop(settings, db)
    loop.tasks = {"generate": partial(run_generate, engine=engine, checker=checker)}  # type: ignore[arg-type]
    row = jobs.claim_next(db, loop.worker_id, settings.lease_s, ("generate",))
    assert row is not None
    loop.run_job(row)
    return loop
