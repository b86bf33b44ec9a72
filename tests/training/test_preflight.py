"""The training memory preflight: the estimate's formula, and a job refused (1403) before training."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.synthetic import make_dataset_zip
from wanforge.engine.loading import load_pipeline
from wanforge.training.errors import TrainingMemoryError
from wanforge.training.job import train_from_zip
from wanforge.training.preflight import GIB, ModelSpec, Window, check_memory, estimate, lora_param_count
from wanforge.training.run import TrainParams

# a small bf16 model: 2 layers, dim 24, ffn 32
SMALL = ModelSpec(num_layers=2, dim=24, ffn_dim=32, image_kv_dim=None, weight_bytes=1000, compute_bytes=2)
# Wan 2.2 I2V A14B's config; an expert taken as about 14.3 billion bf16 parameters (not an exact count)
A14B = ModelSpec(40, 5120, 13824, None, weight_bytes=14_288_901_184 * 2, compute_bytes=2)


def test_tokens_follow_the_vae_and_the_patch() -> None:
    assert Window(81, 480, 832).tokens == 21 * 30 * 52
    assert Window(17, 32, 48).tokens == 5 * 2 * 3


def test_the_estimate_of_a_small_model_by_hand() -> None:
    # LoRA: per layer 8 x (24 + 24) + (32 + 24) + (24 + 32) = 496, x 2 layers x rank 4, 16 bytes each
    assert lora_param_count(SMALL, 4) == 3968
    # per token per block: 2 x (12 x 24 + 2 x 32) = 704, plus float32 LoRA inputs 4 x (7 x 24 + 32) = 800
    window = Window(17, 32, 48)  # 30 tokens
    with_ckpt = estimate(SMALL, window, rank=4, overhead=7)
    assert with_ckpt.weights == 1000
    assert with_ckpt.lora == 3968 * 16
    assert with_ckpt.activations == 30 * (2 * 2 * 24 + 1504)  # block inputs + one block recomputed
    assert with_ckpt.total == 1000 + 63488 + 48000 + 7
    without = estimate(SMALL, window, rank=4, gradient_checkpointing=False)
    assert without.activations == 30 * 2 * 1504
    fp32 = estimate(
        ModelSpec(2, 24, 32, 40, 1000, compute_bytes=4), window, rank=4, gradient_checkpointing=False
    )
    assert fp32.lora == 2 * (496 + 2 * (40 + 24)) * 4 * 16  # with the image key/value projections
    assert fp32.activations == 30 * 2 * 4 * (12 * 24 + 2 * 32)  # no float32 copies


def test_the_estimate_grows_with_window_rank_batch_and_without_checkpointing() -> None:
    def total(frames: int = 17, height: int = 32, width: int = 48, **kw: int | bool) -> int:
        return estimate(SMALL, Window(frames, height, width), **{"rank": 4, **kw}).total  # type: ignore[arg-type]

    assert total(frames=17) < total(frames=33) < total(frames=81)
    assert total(height=32) < total(height=64) < total(height=480)
    assert total(width=48) < total(width=96) < total(width=832)
    assert total(rank=4) < total(rank=8) < total(rank=32)
    assert total(batch_size=1) < total(batch_size=2)
    assert total(gradient_checkpointing=True) < total(gradient_checkpointing=False)


def test_wan_a14b_at_the_default_window_is_in_the_measured_range() -> None:
    needed = estimate(A14B, Window(81, 480, 832), rank=32, overhead=2 * GIB).total
    assert 50 * GIB < needed < 70 * GIB  # the 58-70 GiB, measured, for the same job


def test_a_job_that_does_not_fit_names_the_options_that_would() -> None:
    with pytest.raises(TrainingMemoryError) as err:
        check_memory(
            A14B,
            Window(81, 480, 832),
            rank=32,
            batch_size=1,
            gradient_checkpointing=False,
            available=50 * GIB,
            overhead=2 * GIB,
        )
    assert str(err.value) == (
        "not enough device memory to train: the job needs about 490.8 GiB (an estimate: weights "
        "26.6 GiB, LoRA and optimizer 2.3 GiB, activations 459.9 GiB, overhead 2.0 GiB) for 81-frame "
        "480x832 windows at lora_rank 32, and about 50.0 GiB is available; options that would fit: "
        "gradient checkpointing and 49-frame windows (about 45.8 GiB); gradient checkpointing and "
        "33-frame windows (about 41.2 GiB); gradient checkpointing and 17-frame windows (about 36.6 "
        "GiB); gradient checkpointing and a 240x416 training area (about 36.9 GiB)"
    )


def test_no_available_memory_means_no_check() -> None:
    assert (
        check_memory(
            SMALL, Window(81, 480, 832), rank=32, batch_size=1, gradient_checkpointing=True, available=None
        ).total
        > 0
    )


DEMO_REFUSAL = (
    "not enough device memory to train: the job needs about 0.7 MiB (an estimate: weights 0.2 MiB, "
    "LoRA and optimizer 0.5 MiB, activations 0.0 MiB, overhead 0.0 MiB) for 17-frame 32x48 windows "
    "at lora_rank 32, and about 0.4 MiB is available; options that would fit: lora_rank 8 (about "
    "0.4 MiB); lora_rank 4 (about 0.3 MiB)"
)


@pytest.fixture(scope="module")
def demo_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("zip")
    return make_dataset_zip(
        root / "data.zip", {"clips/a.mp4": "p3r5on waves"}, frames=17, width=48, height=32
    )


def test_a_job_over_the_limit_is_refused_before_training(demo_zip: Path, tmp_path: Path) -> None:
    loaded = load_pipeline("demo", device="cpu")
    params = TrainParams(steps=1, eval_samples=0, lora_rank=32)
    with pytest.raises(TrainingMemoryError) as err:
        train_from_zip(loaded, demo_zip, tmp_path, params, output_stem="x", memory_limit_bytes=400_000)
    assert err.value.code == 1403
    assert str(err.value) == DEMO_REFUSAL
    assert not (tmp_path / "train").exists()  # nothing cached, nothing trained


def test_a_job_within_the_limit_trains(demo_zip: Path, tmp_path: Path) -> None:
    loaded = load_pipeline("demo", device="cpu")
    params = TrainParams(steps=1, eval_samples=0, lora_rank=4)
    trained = train_from_zip(loaded, demo_zip, tmp_path, params, output_stem="x", memory_limit_bytes=GIB)
    assert trained.result.high_noise_path.is_file() and trained.result.low_noise_path.is_file()
