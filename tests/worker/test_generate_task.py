"""The generation task's wiring, with a fake engine that records the request it is given: LoRAs
resolved per list and expert, last_image and duration passed on, LoRA errors named by field,
adapters, timings and notes on the prediction."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save as save_safetensors

from tests.samples import png_bytes
from wanforge.catalog import get_model
from wanforge.config import Settings
from wanforge.engine.generate import GenerationRequest, GenerationResult
from wanforge.engine.loras import LoraError
from wanforge.predictions import prediction_out
from wanforge.store import jobs, uploads
from wanforge.store.db import Database
from wanforge.worker.generate_task import run_generate
from wanforge.worker.loop import WorkerLoop

LORA = save_safetensors({"blocks.0.lora_A.weight": np.ones((2, 4), dtype=np.float32)})
OTHER = save_safetensors({"blocks.0.lora_B.weight": np.ones((4, 2), dtype=np.float32)})
SHA, OTHER_SHA = hashlib.sha256(LORA).hexdigest(), hashlib.sha256(OTHER).hexdigest()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


IMAGE, LAST = data_uri(png_bytes(160, 90, seed=1)), data_uri(png_bytes(64, 64, seed=2))


@dataclass
class FakeResult(GenerationResult):
    """What the engine answers once LoRAs are in (adapters, notes, LoRA timings)."""

    adapters: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class FakeEngine:
    seen: list[GenerationRequest] = field(default_factory=list)
    error: Exception | None = None
    # called as the engine would be midway: (on_step, on_expert) -> anything to remember
    midway: Any = None
    midway_saw: list[Any] = field(default_factory=list)

    def generate(
        self, req: GenerationRequest, on_step: Any = None, should_cancel: Any = None, on_expert: Any = None
    ) -> FakeResult:
        self.seen.append(req)
        if self.error is not None:
            raise self.error
        if self.midway is not None:
            self.midway_saw.append(self.midway(on_step, on_expert))
        frames = 9 if req.duration_s == 5 else 17
        return FakeResult(
            frames=np.zeros((frames, 16, 16, 3), dtype=np.uint8),
            fps=16,
            seed=req.seed,
            width=16,
            height=16,
            timings={"render_s": 0.5, "lora_load_s": 0.0123, "lora_activate_s": 0.002},
            adapters=[
                {"sha256": r.sha256, "name": r.name, "scale": r.scale, "expert": e, "format": "wanforge"}
                for r in req.loras
                for e in sorted(r.experts)
            ],
            notes=[f"{r.name}: skipped 2 keys" for r in req.loras[:1]],
        )


def run(settings: Settings, db: Database, engine: FakeEngine, model: str, body: dict[str, Any]) -> Any:
    spec = get_model(model)
    assert spec is not None
    inp = spec.input_model.model_validate(body).model_dump(mode="json", exclude={"enable_sync_mode"})
    pid = jobs.create_prediction(
        db, model=model, kind="generate", input=inp, server_base="http://h", max_attempts=1
    ).id
    loop = WorkerLoop(settings, db)
    loop.tasks = {"generate": partial(run_generate, engine=engine)}  # type: ignore[arg-type]
    for key, data in (
        ("uploads/abc/style.safetensors", LORA),
        ("outputs/def/p3r5on_low_noise.safetensors", OTHER),
    ):
        if loop.storage.exists(key):  # a second job in the same test
            continue
        loop.storage.put_bytes(key, data)
        # a file of this server is usable only as one of its uploads or outputs (tenancy)
        uploads.create_upload(
            db,
            key=key,
            filename=key.rsplit("/", 1)[-1],
            content_type="application/octet-stream",
            declared_size=len(data),
            put_token=None,
            api_key_id=None,
        )
    row = jobs.claim_next(db, loop.worker_id, settings.lease_s, ("generate",))
    assert row is not None
    loop.run_job(row)
    done = jobs.get_prediction(db, pid)
    assert done is not None
    return prediction_out(done, "http://h", with_logs=True)


def test_loras_last_image_and_duration_reach_the_engine(settings: Settings, db: Database) -> None:
    engine = FakeEngine()
    out = run(
        settings,
        db,
        engine,
        "wavespeed-ai/wan-2.2/image-to-video-lora",
        {
            "image": IMAGE,
            "last_image": LAST,
            "prompt": "a cat",
            "negative_prompt": "blurry",
            "resolution": "720p",
            "duration": 8,
            "seed": 11,
            "loras": [{"path": "/files/uploads/abc/style.safetensors", "scale": 0.5}],
            "high_noise_loras": [{"path": "http://h/files/uploads/abc/style.safetensors", "scale": 2}],
            "low_noise_loras": [{"path": "/files/outputs/def/p3r5on_low_noise.safetensors"}],
        },
    )
    assert out.status == "completed", out.error
    (req,) = engine.seen
    assert (req.prompt, req.negative_prompt, req.resolution, req.seed, req.duration_s) == (
        "a cat",
        "blurry",
        "720p",
        11,
        8,
    )
    assert req.image.size == (160, 90) and req.last_image is not None and req.last_image.size == (64, 64)
    assert [(r.sha256, r.scale, sorted(r.experts), r.name) for r in req.loras] == [
        (SHA, 0.5, ["high_noise", "low_noise"], "style.safetensors"),
        (SHA, 2.0, ["high_noise"], "style.safetensors"),
        (OTHER_SHA, 1.0, ["low_noise"], "p3r5on_low_noise.safetensors"),
    ]
    assert all(r.file.read_bytes() in (LORA, OTHER) for r in req.loras)
    assert out.result["adapters"] == [
        {
            "sha256": SHA,
            "name": "style.safetensors",
            "scale": 0.5,
            "expert": "high_noise",
            "format": "wanforge",
        },
        {
            "sha256": SHA,
            "name": "style.safetensors",
            "scale": 0.5,
            "expert": "low_noise",
            "format": "wanforge",
        },
        {
            "sha256": SHA,
            "name": "style.safetensors",
            "scale": 2.0,
            "expert": "high_noise",
            "format": "wanforge",
        },
        {
            "sha256": OTHER_SHA,
            "name": "p3r5on_low_noise.safetensors",
            "scale": 1.0,
            "expert": "low_noise",
            "format": "wanforge",
        },
    ]
    timings = out.timings.model_dump()
    assert timings["lora_load"] == 12 and timings["lora_activate"] == 2
    assert isinstance(timings["lora_fetch"], int) and isinstance(timings["inference"], int)
    assert set(timings) == {"inference", "lora_fetch", "lora_load", "lora_activate"}
    assert "timings" not in out.result and out.result["frames"] == 17
    assert "style.safetensors: skipped 2 keys" in out.logs


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ("p3r5on_low_noise.safetensors: 3 keys match no layer: a, b, c", "low_noise_loras[0]"),
        ("style.safetensors: shapes do not fit", "loras[0], high_noise_loras[0]"),
        ("unknown LoRA format", "loras"),
    ],
)
def test_a_lora_error_is_1401_naming_the_field(
    settings: Settings, db: Database, message: str, field: str
) -> None:
    out = run(
        settings,
        db,
        FakeEngine(error=LoraError(message)),
        "wavespeed-ai/wan-2.2/i2v-480p-lora",
        {
            "image": IMAGE,
            "prompt": "p",
            "loras": [{"path": "/files/uploads/abc/style.safetensors"}],
            "high_noise_loras": [{"path": "/files/uploads/abc/style.safetensors"}],
            "low_noise_loras": [{"path": "/files/outputs/def/p3r5on_low_noise.safetensors"}],
        },
    )
    assert (out.status, out.error_code, out.error) == (
        "failed",
        1401,
        f"invalid parameter {field}: {message}",
    )


def test_a_lora_that_cannot_be_fetched_fails_before_the_engine(settings: Settings, db: Database) -> None:
    engine = FakeEngine()
    out = run(
        settings,
        db,
        engine,
        "wavespeed-ai/wan-2.2/i2v-720p-lora",
        {"image": IMAGE, "prompt": "p", "low_noise_loras": [{"path": "/files/uploads/zzz/gone.safetensors"}]},
    )
    assert (out.status, out.error_code) == ("failed", 1402)
    # the job log and error name no server path: scrub_paths keeps the file name of a /files/ path
    assert out.error == (
        "cannot read low_noise_loras[0].path: upload not found: low_noise_loras[0].path URL points to "
        "gone.safetensors"
    )
    assert engine.seen == []


def test_a_bad_last_image_is_1402(settings: Settings, db: Database) -> None:
    out = run(
        settings,
        db,
        FakeEngine(),
        "wavespeed-ai/wan-2.2/i2v-480p-lora",
        {
            "image": IMAGE,
            "prompt": "p",
            "last_image": "data:image/png;base64," + base64.b64encode(b"no").decode(),
        },
    )
    assert (out.status, out.error_code) == ("failed", 1402)
    assert out.error.startswith("cannot read last_image: ")


def test_a_lora_model_without_loras_and_the_plain_model(settings: Settings, db: Database) -> None:
    engine = FakeEngine()
    out = run(settings, db, engine, "wavespeed-ai/wan-2.2/i2v-480p-lora", {"image": IMAGE, "prompt": "p"})
    assert out.status == "completed" and out.result["adapters"] == []
    assert engine.seen[0].loras == () and engine.seen[0].last_image is None
    assert engine.seen[0].resolution == "480p" and engine.seen[0].duration_s == 5

    out = run(settings, db, engine, "alibaba/wan-2.2/i2v-plus-720p", {"image": IMAGE, "prompt": "p"})
    assert out.status == "completed" and "adapters" not in out.result
    assert set(out.timings.model_dump()) == {"inference"}
    assert engine.seen[1].loras == () and engine.seen[1].resolution == "720p"


def test_the_progress_names_the_expert_that_ran_the_last_step(settings: Settings, db: Database) -> None:
    def midway(on_step: Any, on_expert: Any) -> Any:
        on_expert("high_noise")
        on_expert("low_noise")
        on_step(2, 2)  # the last step: never held back by the progress throttle
        [row] = jobs.list_predictions(db, page=1, page_size=1).items
        return row.progress

    engine = FakeEngine(midway=midway)
    out = run(settings, db, engine, "alibaba/wan-2.2/i2v-plus-480p", {"image": IMAGE, "prompt": "p"})
    assert out.status == "completed", out.error
    [progress] = engine.midway_saw
    assert (progress["stage"], progress["step"], progress["total"]) == ("denoising", 2, 2)
    assert progress["expert"] == "low_noise"
