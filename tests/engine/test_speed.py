"""FP8 storage and First Block Cache on the demo model: the frames against the reference path,
with the measured difference as the bound (docs/engine.md states the same numbers)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.engine.conftest import FAST_TEST_PROFILE, smooth_image
from tests.engine.lora_files import random_lora, request, write_wanforge
from wanforge.engine.generate import Engine, GenerationCancelled, GenerationRequest
from wanforge.engine.loading import LoadedModel, load_pipeline

# 4 steps: 2 per expert, so each expert has a step after its first that the cache can skip
CACHE_STEPS = 4


def _render(loaded: LoadedModel, steps: int) -> tuple[np.ndarray, int]:
    """The uint8 frames, and how often the experts' last block really ran its feed-forward."""
    calls = 0

    def count(*_args: object) -> None:
        nonlocal calls
        calls += 1

    handles = [
        expert.blocks[-1].ffn.register_forward_hook(count)
        for expert in (loaded.pipe.transformer, loaded.pipe.transformer_2)
    ]
    profile = replace(loaded.profile, **{**FAST_TEST_PROFILE, "steps": steps}, generation_area=48 * 32)  # type: ignore[arg-type]
    req = GenerationRequest(smooth_image(48, 32, seed=5), "a cat walks", "", "480p", seed=11, duration_s=1)
    try:
        with torch.random.fork_rng(devices=[]):
            frames = Engine(replace(loaded, profile=profile)).generate(req).frames
    finally:
        for handle in handles:
            handle.remove()
    return frames, calls


def _diff(a: np.ndarray, b: np.ndarray) -> tuple[int, float]:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return int(d.max()), float(d.mean())


@pytest.fixture(scope="module")
def reference() -> dict[int, tuple[np.ndarray, int]]:
    loaded = load_pipeline("demo")
    return {steps: _render(loaded, steps) for steps in (FAST_TEST_PROFILE["steps"], CACHE_STEPS)}


def test_fp8_storage_keeps_expert_linears_in_float8(reference: dict[int, tuple[np.ndarray, int]]) -> None:
    loaded = load_pipeline("demo", fp8="storage")
    assert loaded.fp8 == "storage"
    for expert in (loaded.pipe.transformer, loaded.pipe.transformer_2):
        linears = [m for m in expert.blocks.modules() if isinstance(m, torch.nn.Linear)]
        assert linears and {m.weight.dtype for m in linears} == {torch.float8_e4m3fn}
        assert expert.patch_embedding.weight.dtype == torch.float32  # diffusers keeps it unconverted
    frames, _ = _render(loaded, FAST_TEST_PROFILE["steps"])
    worst, mean = _diff(frames, reference[FAST_TEST_PROFILE["steps"]][0])
    # measured: max 7, mean 0.100 of 255 (480p samples with shift 5.0)
    assert 0 < worst <= 10
    assert mean < 0.14


def test_first_block_cache_at_threshold_zero_is_exact(reference: dict[int, tuple[np.ndarray, int]]) -> None:
    loaded = load_pipeline("demo", step_cache="first_block", step_cache_threshold=0.0)
    assert loaded.step_cache == "first_block"
    frames, calls = _render(loaded, CACHE_STEPS)
    ref_frames, ref_calls = reference[CACHE_STEPS]
    assert np.array_equal(frames, ref_frames)
    assert calls == ref_calls == 8  # 4 steps x (cond + uncond): nothing skipped


def test_first_block_cache_skips_blocks_at_a_high_threshold(
    reference: dict[int, tuple[np.ndarray, int]],
) -> None:
    loaded = load_pipeline("demo", step_cache="first_block", step_cache_threshold=10.0)
    frames, calls = _render(loaded, CACHE_STEPS)
    # only each expert's first step, per CFG branch, runs the remaining blocks
    assert calls == 4
    worst, mean = _diff(frames, reference[CACHE_STEPS][0])
    # measured: max 27, mean 0.401 of 255 (480p samples with shift 5.0)
    assert 0 < worst <= 36
    assert mean < 0.55


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fp8": "fp4"}, "WANFORGE_FP8 must be one of off, storage, compute, auto, got 'fp4'"),
        ({"step_cache": "mag"}, "WANFORGE_STEP_CACHE must be one of off, first_block, got 'mag'"),
        ({"step_cache_threshold": -0.1}, "WANFORGE_STEP_CACHE_THRESHOLD must be >= 0, got -0.1"),
    ],
)
def test_unknown_options_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as info:
        load_pipeline("demo", **kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_settings_read_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    from wanforge.config import Settings
    from wanforge.engine.speed import DEFAULT_STEP_CACHE_THRESHOLD

    default = Settings()
    assert (default.fp8, default.step_cache, default.step_cache_threshold) == (
        "off",
        "off",
        DEFAULT_STEP_CACHE_THRESHOLD,
    )
    monkeypatch.setenv("WANFORGE_FP8", "storage")
    monkeypatch.setenv("WANFORGE_STEP_CACHE", "first_block")
    monkeypatch.setenv("WANFORGE_STEP_CACHE_THRESHOLD", "0.2")
    chosen = Settings()
    assert (chosen.fp8, chosen.step_cache, chosen.step_cache_threshold) == ("storage", "first_block", 0.2)


def test_a_lora_runs_on_fp8_storage_close_to_the_reference(tmp_path: Path) -> None:
    lora = write_wanforge(random_lora(1), tmp_path / "a.safetensors")
    outputs = {}
    for fp8 in ("off", "storage"):
        loaded = load_pipeline("demo", fp8=fp8)
        profile = replace(loaded.profile, **FAST_TEST_PROFILE, generation_area=48 * 32)  # type: ignore[arg-type]
        engine = Engine(replace(loaded, profile=profile))
        req = GenerationRequest(
            smooth_image(48, 32, seed=5),
            "a cat walks",
            "",
            "480p",
            seed=11,
            duration_s=1,
            loras=(request(lora),),
        )
        with torch.random.fork_rng(devices=[]):
            outputs[fp8] = engine.generate(req).frames
        lora_dtypes = {p.dtype for n, p in loaded.pipe.transformer.named_parameters() if ".lora_A." in n}
        assert lora_dtypes == {torch.float32}  # the compute dtype, not float8
    worst, mean = _diff(outputs["storage"], outputs["off"])
    # measured: max 14, mean 0.157 of 255 (the LoRA's weights stay exact; its base layers are fp8)
    assert 0 < worst <= 19
    assert mean < 0.21


def test_a_cancelled_cached_generation_leaves_nothing_for_the_next() -> None:
    loaded = load_pipeline("demo", step_cache="first_block", step_cache_threshold=10.0)
    fresh, _ = _render(loaded, CACHE_STEPS)
    profile = replace(loaded.profile, **{**FAST_TEST_PROFILE, "steps": CACHE_STEPS}, generation_area=48 * 32)  # type: ignore[arg-type]
    other = GenerationRequest(smooth_image(48, 32, seed=9), "a dog runs", "", "480p", seed=3, duration_s=1)
    steps: list[int] = []
    with pytest.raises(GenerationCancelled):
        Engine(replace(loaded, profile=profile)).generate(
            other, on_step=lambda i, _n: steps.append(i), should_cancel=lambda: len(steps) >= 1
        )
    again, calls = _render(loaded, CACHE_STEPS)
    assert np.array_equal(again, fresh)  # no residual of the cancelled call reused
    assert calls == 4
