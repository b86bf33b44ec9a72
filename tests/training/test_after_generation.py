"""Training on a pipeline that has served LoRA generations: one worker's model, used in turn.

Train -> generate with the LoRA -> train again must all complete (the playground's "Generate with
this LoRA" leads straight there), the cached generation adapters must survive training, and a
LoRA trained beside them must equal one trained on a clean pipeline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from tests.engine.conftest import smooth_image
from tests.engine.lora_files import high, low, random_lora, request, write_wanforge
from tests.engine.test_lora_engine import fast, request_for
from tests.training.test_trainer import moving_square_clips
from wanforge.engine.generate import Engine
from wanforge.engine.loading import load_pipeline
from wanforge.engine.loras import LoraRequest
from wanforge.training.lora import ADAPTER_NAME, add_lora, lora_modules
from wanforge.training.run import TrainParams, train_lora

PARAMS = TrainParams(steps=2, learning_rate=1e-2, lora_rank=4, export_dtype="float32", eval_samples=1)


def lora_files(result_paths: tuple[Path, Path]) -> list[dict[str, torch.Tensor]]:
    return [load_file(str(path)) for path in result_paths]


def test_train_generate_with_the_lora_then_train_again(tmp_path: Path) -> None:
    loaded = fast(load_pipeline("demo"))
    engine = Engine(loaded, lora_cache_size=4)
    image = smooth_image(48, 32, seed=5)
    clips = moving_square_clips(2)

    def render(*loras: LoraRequest) -> np.ndarray:
        with torch.random.fork_rng(devices=[]):
            frames, _plan = engine.render(request_for(image, *loras))
        return frames

    # the same training on a pipeline that has never carried an adapter: the reference files
    clean = train_lora(fast(load_pipeline("demo")).pipe, clips, PARAMS, tmp_path / "clean", "x", device="cpu")
    reference = lora_files((clean.high_noise_path, clean.low_noise_path))

    first = train_lora(loaded.pipe, clips, PARAMS, tmp_path / "first", "x", device="cpu")
    base = render()
    trained, trained_low = high(first.high_noise_path), low(first.low_noise_path)
    other = request(write_wanforge(random_lora(1), tmp_path / "other.safetensors"))
    with_lora = render(trained, trained_low, other)
    assert not np.array_equal(with_lora, base)

    second = train_lora(loaded.pipe, clips, PARAMS, tmp_path / "second", "x", device="cpu")

    # both trainings equal the clean one: the generation adapters took no part in them
    for result in (first, second):
        for got, want in zip(
            lora_files((result.high_noise_path, result.low_noise_path)), reference, strict=True
        ):
            assert got.keys() == want.keys()
            assert all(torch.equal(got[k], want[k]) for k in want)
    # the cached generation adapters are still there, the trainer's own is gone, and the frames
    # of a base job and of the LoRA job are what they were, bit for bit
    for transformer in (loaded.pipe.transformer, loaded.pipe.transformer_2):
        names = set(getattr(transformer, "peft_config", {}))
        assert ADAPTER_NAME not in names and len(names) == 2
    assert np.array_equal(render(), base)
    assert np.array_equal(render(trained, trained_low, other), with_lora)


def test_a_leftover_training_adapter_is_replaced_not_refused(tmp_path: Path) -> None:
    """An adapter of the trainer's name already on an expert (left by code that failed before its
    cleanup) is removed before the run starts, not refused until the worker restarts."""
    loaded = fast(load_pipeline("demo"))
    clips = moving_square_clips(2)
    add_lora(loaded.pipe.transformer, 4, None, torch.Generator().manual_seed(0))
    result = train_lora(loaded.pipe, clips, PARAMS, tmp_path, "x", device="cpu")
    assert result.high_noise_path.is_file()
    for transformer in (loaded.pipe.transformer, loaded.pipe.transformer_2):
        assert not getattr(transformer, "peft_config", {}) and not lora_modules(transformer)
