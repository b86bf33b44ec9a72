"""One worker, one model, jobs of both kinds in turn, as a user walks the product: an ultra-fast
job (the distill LoRAs load into the engine's adapter cache), train a LoRA, generate with it, train
again, and generate once more. Every job completes; before, the second training failed with "the
pipeline already carries LoRA adapters" until the worker restarted."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.engine.lora_files import random_lora, write_wanforge
from tests.engine.test_lora_engine import fast
from tests.training.synthetic import make_dataset_zip
from tests.worker.generate_kit import png_data_uri
from wanforge.config import Settings
from wanforge.engine.generate import Engine
from wanforge.engine.loading import load_pipeline
from wanforge.store import jobs
from wanforge.store.db import Database
from wanforge.store.migrate import upgrade
from wanforge.training.job import train_from_zip
from wanforge.training.run import TrainParams
from wanforge.vocabulary import Status
from wanforge.worker import train_task
from wanforge.worker.generate_task import run_generate
from wanforge.worker.loop import WorkerLoop

TRAINER = "wavespeed-ai/wan-2.2-i2v-lora-trainer"


@pytest.fixture
def sqlite_db(settings: Settings) -> Iterator[Database]:
    """SQLite only: the subject is the worker's model, not the store (tested on both elsewhere)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url()
    upgrade(url)
    database = Database(url)
    yield database
    database.dispose()


@pytest.fixture(autouse=True)
def short_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Train 2 steps per expert, not the 50 the API asks at least."""

    def shorter(loaded: Any, zip_path: Path, work_dir: Path, params: TrainParams, **kw: Any) -> Any:
        return train_from_zip(loaded, zip_path, work_dir, dataclasses.replace(params, steps=2), **kw)

    monkeypatch.setattr(train_task, "train_from_zip", shorter)


def test_ultra_fast_then_train_then_generate_with_it_then_train_again(
    settings: Settings, sqlite_db: Database, tmp_path: Path
) -> None:
    lora_dir = tmp_path / "loras"
    lora_dir.mkdir()
    write_wanforge(random_lora(31), lora_dir / "distill_high.safetensors")
    write_wanforge(random_lora(32), lora_dir / "distill_low.safetensors", "low_noise")
    settings = settings.model_copy(
        update={
            "ultra_fast_high_noise_lora": lora_dir / "distill_high.safetensors",
            "ultra_fast_low_noise_lora": lora_dir / "distill_low.safetensors",
            "lora_dir": lora_dir,
        }
    )
    loaded = fast(load_pipeline("demo"))
    loop = WorkerLoop(settings, sqlite_db)
    loop.tasks = {
        "generate": partial(run_generate, engine=Engine(loaded, lora_cache_size=8)),
        "train": partial(train_task.run_train, loaded=loaded),
    }
    data = make_dataset_zip(tmp_path / "moves.zip", {"a.mp4": "a square slides right"}, frames=40)

    def run(model: str, kind: str, body: dict[str, Any]) -> Any:
        pid = jobs.create_prediction(
            sqlite_db, model=model, kind=kind, input=body, server_base="http://h", max_attempts=1
        ).id
        row = jobs.claim_next(sqlite_db, loop.worker_id, settings.lease_s, (kind,))
        assert row is not None and row.id == pid
        loop.run_job(row)
        done = jobs.get_prediction(sqlite_db, pid)
        assert done is not None
        assert (done.status, done.error) == (Status.COMPLETED, ""), (model, done.error)
        return done

    image = {"image": png_data_uri(), "prompt": "the camera pans left", "seed": 7}
    zipped = "data:application/zip;base64," + base64.b64encode(data.read_bytes()).decode()
    train_body = {"data": zipped, "steps": 50, "lora_rank": 4}
    run("wavespeed-ai/wan-2.2/i2v-480p-ultra-fast", "generate", image)
    first = run(TRAINER, "train", train_body)
    for name, key in first.result["named_outputs"].items():
        loop.storage.copy_to(key, lora_dir / f"{name}.safetensors")
    with_lora = {
        **image,
        "high_noise_loras": [{"path": "high_noise_lora.safetensors", "scale": 1.0}],
        "low_noise_loras": [{"path": "low_noise_lora.safetensors", "scale": 1.0}],
    }
    run("wavespeed-ai/wan-2.2/i2v-480p-lora", "generate", with_lora)
    run("wavespeed-ai/wan-2.2/i2v-480p-lora-ultra-fast", "generate", with_lora)
    run(TRAINER, "train", train_body)
    run("wavespeed-ai/wan-2.2/i2v-480p-lora", "generate", with_lora)
