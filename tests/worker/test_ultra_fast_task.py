"""The ultra-fast models end to end through the worker on the demo model with a random distill LoRA
pair: 4 steps (2 per expert), no CFG pass, the schedule on the prediction, user LoRAs stacked on
the distill LoRAs, and a clear 5003 where the worker has no (readable) distill LoRAs."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.engine.lora_files import random_lora, write_wanforge
from tests.worker.generate_kit import RecordingEngine, png_data_uri
from wanforge.config import Settings
from wanforge.engine.generate import Engine
from wanforge.predictions import PredictionOut, prediction_out
from wanforge.store import jobs
from wanforge.store.db import Database
from wanforge.worker.generate_task import run_generate
from wanforge.worker.loop import WorkerLoop

PLAIN = "wavespeed-ai/wan-2.2/i2v-480p-ultra-fast"
WITH_LORAS = "wavespeed-ai/wan-2.2/i2v-720p-lora-ultra-fast"


@pytest.fixture(scope="module")
def distill_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("distill")
    write_wanforge(random_lora(31), root / "high.safetensors")
    write_wanforge(random_lora(32), root / "low.safetensors", "low_noise")
    write_wanforge(random_lora(33), root / "style.safetensors")
    return root


def with_distill(settings: Settings, root: Path) -> Settings:
    return settings.model_copy(
        update={
            "ultra_fast_high_noise_lora": root / "high.safetensors",
            "ultra_fast_low_noise_lora": root / "low.safetensors",
            "lora_dir": root,
        }
    )


@pytest.fixture(scope="module")
def engine() -> RecordingEngine:
    return RecordingEngine()


@pytest.fixture
def calls(engine: RecordingEngine) -> Iterator[list[str]]:
    """The experts' forward calls, in order."""
    seen: list[str] = []
    pipe = engine.engine.loaded.pipe
    handles = [
        getattr(pipe, name).register_forward_pre_hook(lambda *_a, name=name: seen.append(name))
        for name in ("transformer", "transformer_2")
    ]
    yield seen
    for handle in handles:
        handle.remove()


def run(settings: Settings, db: Database, engine: Any, model: str, **fields: Any) -> PredictionOut:
    body = {"image": png_data_uri(), "prompt": "the camera pans left", "seed": 7, **fields}
    pid = jobs.create_prediction(
        db, model=model, kind="generate", input=body, server_base="http://h", max_attempts=1
    ).id
    loop = WorkerLoop(settings, db)
    loop.tasks = {"generate": partial(run_generate, engine=engine)}
    row = jobs.claim_next(db, loop.worker_id, settings.lease_s, ("generate",))
    assert row is not None
    loop.run_job(row)
    done = jobs.get_prediction(db, pid)
    assert done is not None
    return prediction_out(done, "http://h", with_logs=True)


def test_a_job_runs_four_steps_without_cfg_with_the_distill_loras(
    settings: Settings, db: Database, distill_dir: Path, engine: RecordingEngine, calls: list[str]
) -> None:
    out = run(with_distill(settings, distill_dir), db, engine, PLAIN)
    assert out.status == "completed", out.error
    assert calls == ["transformer", "transformer", "transformer_2", "transformer_2"]
    assert (out.result["sampling"], out.result["steps"], out.result["cfg"]) == ("ultra_fast", 4, False)
    assert [(a["name"], a["expert"], a["scale"]) for a in out.result["adapters"]] == [
        ("ultra-fast distill LoRA (high noise)", "high_noise", 1.0),
        ("ultra-fast distill LoRA (low noise)", "low_noise", 1.0),
    ]
    assert {"inference", "lora_load", "lora_activate"} <= set(out.timings.model_dump())
    assert engine.requests[-1].sampling == "ultra_fast" and out.result["attention_backend"] == "native"
    assert str(distill_dir) not in str(out.model_dump())  # no server path reaches the client


def test_user_loras_stack_on_the_distill_loras(
    settings: Settings, db: Database, distill_dir: Path, engine: RecordingEngine, calls: list[str]
) -> None:
    out = run(
        with_distill(settings, distill_dir),
        db,
        engine,
        WITH_LORAS,
        high_noise_loras=[{"path": "style.safetensors", "scale": 0.5}],
    )
    assert out.status == "completed", out.error
    assert len(calls) == 4 and out.result["steps"] == 4 and out.result["cfg"] is False
    assert [(a["name"], a["expert"], a["scale"]) for a in out.result["adapters"]] == [
        ("ultra-fast distill LoRA (high noise)", "high_noise", 1.0),
        ("ultra-fast distill LoRA (low noise)", "low_noise", 1.0),
        ("style.safetensors", "high_noise", 0.5),
    ]


def test_a_standard_model_reports_its_own_schedule(
    settings: Settings, db: Database, engine: RecordingEngine, calls: list[str]
) -> None:
    out = run(settings, db, engine, "alibaba/wan-2.2/i2v-plus-480p")
    assert out.status == "completed", out.error
    assert (out.result["sampling"], out.result["steps"], out.result["cfg"]) == ("standard", 1, True)
    assert calls == ["transformer", "transformer"]  # 1 step: the conditional and the CFG pass
    assert "adapters" not in out.result


def test_a_worker_without_distill_loras_fails_the_job_with_5003(settings: Settings, db: Database) -> None:
    engine = RecordingEngine(engine=Engine.__new__(Engine))  # never reached
    out = run(settings, db, engine, PLAIN)
    assert (out.status, out.error_code) == ("failed", 5003)
    assert out.error == (
        f"model '{PLAIN}' is not enabled on this server: the ultra-fast models need the operator's "
        "distill LoRAs, set by WANFORGE_ULTRA_FAST_HIGH_NOISE_LORA and WANFORGE_ULTRA_FAST_LOW_NOISE_LORA "
        "(on this worker)"
    )
    assert engine.requests == []


def test_an_unreadable_distill_lora_is_5003_without_the_path(
    settings: Settings, db: Database, tmp_path: Path
) -> None:
    missing = tmp_path / "secret-dir"
    broken = settings.model_copy(
        update={
            "ultra_fast_high_noise_lora": missing / "high.safetensors",
            "ultra_fast_low_noise_lora": missing / "low.safetensors",
        }
    )
    engine = RecordingEngine(engine=Engine.__new__(Engine))
    out = run(broken, db, engine, PLAIN)
    assert (out.status, out.error_code) == ("failed", 5003)
    assert out.error == (
        f"model '{PLAIN}' is not available: this worker cannot read its ultra-fast distill LoRA "
        "(high noise) (WANFORGE_ULTRA_FAST_HIGH_NOISE_LORA: No such file or directory)"
    )
    assert "secret-dir" not in out.error and engine.requests == []


def test_a_distill_file_that_is_not_a_lora_is_5003(
    settings: Settings, db: Database, distill_dir: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    broken = with_distill(settings, distill_dir).model_copy(update={"ultra_fast_low_noise_lora": bad})
    out = run(broken, db, RecordingEngine(), PLAIN)
    assert (out.status, out.error_code) == ("failed", 5003)
    assert out.error.startswith(f"model {PLAIN} is not available: ultra-fast distill LoRA (low noise)")
