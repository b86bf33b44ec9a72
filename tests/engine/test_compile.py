"""Regional compile on the demo model: the frames against the eager path, LoRA hot-swap into the
compiled experts' slots, and no recompilation when LoRAs change (docs/engine.md states the bounds).

The compile backend is ``aot_eager`` (dynamo's graph capture and AOT autograd, run by the eager
kernels): it checks exactly what regional compile changes (the capture) in a few seconds; inductor
on the CPU would take minutes to generate C++ for the same graphs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from tests.engine.conftest import FAST_TEST_PROFILE, smooth_image
from tests.engine.lora_files import random_lora, request, write_diffusers
from tests.engine.test_lora_engine import lightx2v_file
from wanforge.engine.compile import SLOT_ADAPTER, check_compile
from wanforge.engine.generate import Engine, GenerationRequest
from wanforge.engine.loading import LoadedModel, _check_combinations, load_pipeline
from wanforge.engine.loras import LoraError, LoraRequest

SLOT_RANK = 8


def _engine(loaded: LoadedModel) -> Engine:
    profile = replace(loaded.profile, **FAST_TEST_PROFILE, generation_area=48 * 32)  # type: ignore[arg-type]
    return Engine(replace(loaded, profile=profile))


def _render(engine: Engine, loras: tuple[LoraRequest, ...] = ()) -> np.ndarray:
    req = GenerationRequest(
        smooth_image(48, 32, seed=5), "a cat walks", "", "480p", seed=11, duration_s=1, loras=loras
    )
    with torch.random.fork_rng(devices=[]):
        return engine.generate(req).frames


def _diff(a: np.ndarray, b: np.ndarray) -> tuple[int, float]:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return int(d.max()), float(d.mean())


def _graphs() -> int:
    """Graphs dynamo has compiled so far in this process (a recompile adds one)."""
    return int(counters["stats"]["unique_graphs"])


@pytest.fixture(autouse=True)
def fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture(scope="module")
def eager() -> Engine:
    return _engine(load_pipeline("demo"))


def _compiled(rank: int = SLOT_RANK) -> LoadedModel:
    return load_pipeline("demo", compile="regional", compile_backend="aot_eager", compile_max_lora_rank=rank)


def test_regional_compile_gives_the_eager_frames(eager: Engine) -> None:
    loaded = _compiled()
    assert loaded.compile == "regional"
    for expert in (loaded.pipe.transformer, loaded.pipe.transformer_2):
        assert all(block._compiled_call_impl is not None for block in expert.blocks)
        assert expert.proj_out.base_layer is not None  # the slot wraps every linear, the head too
    before = _graphs()
    frames = _render(_engine(loaded))
    # one graph for every block of both experts: their parameters are inputs, not constants
    assert _graphs() - before == 1
    assert np.array_equal(frames, _render(eager))


def test_the_warm_up_compiles_the_served_shape_so_the_first_request_does_not(eager: Engine) -> None:
    from wanforge.engine.warmup import warm_up, warmup_shapes

    engine = _engine(_compiled())
    fast = replace(engine.loaded, profile=replace(engine.loaded.profile, fps=1))  # 5 s at 1 fps: 5 frames
    assert [(s.frames, s.height, s.width) for s in warmup_shapes(fast, ["480p", "720p", "1080p"])] == [
        (5, 32, 48)
    ]
    before = _graphs()
    seconds = warm_up(fast, ["480p"])
    assert list(seconds) == ["480p 48x32x5"] and _graphs() - before == 1
    req = GenerationRequest(smooth_image(48, 32, seed=5), "a cat walks", "", "480p", seed=11, duration_s=5)
    with torch.random.fork_rng(devices=[]):
        frames = Engine(fast).generate(req).frames
    assert _graphs() - before == 1  # the request ran on the warmed-up graph
    with torch.random.fork_rng(devices=[]):
        assert np.array_equal(
            frames, Engine(replace(eager.loaded, profile=fast.profile)).generate(req).frames
        )


def test_lora_swaps_match_the_uncompiled_path_and_never_recompile(eager: Engine, tmp_path: Path) -> None:
    a = write_diffusers(random_lora(1, rank=4), tmp_path / "a.safetensors")
    b = write_diffusers(random_lora(2, rank=2), tmp_path / "b.safetensors")
    mixed = lightx2v_file(tmp_path / "mixed.safetensors", with_lora=True)  # full deltas + a LoRA part
    sequence: list[tuple[LoraRequest, ...]] = [
        (),
        (request(a),),
        (request(b, scale=0.5),),
        (request(a, scale=0.75), request(b, scale=1.25)),
        (request(mixed),),
        (),
    ]
    compiled = _engine(_compiled())
    _render(compiled)  # compiles the blocks (with the empty slot)
    graphs = _graphs()
    outputs = []
    with torch._dynamo.config.patch(error_on_recompile=True):
        for loras in sequence:
            outputs.append(_diff(_render(compiled, loras), _render(eager, loras)))
    assert _graphs() == graphs  # a swap changed nothing the compiled graph guards on
    base, only_a, only_b, both, with_deltas, base_again = outputs
    assert base == base_again == (0, 0.0)  # an empty slot adds exactly 0
    # measured: A, A+B and the deltas file (its LoRA part in the slot, its deltas added to the
    # base parameters in place, which the graph reads as inputs) exact; B at scale 0.5 max 1, mean 0.00004 of 255 (the scale is folded
    # into B before the product, where peft scales after it)
    for worst, mean in (only_a, only_b, both, with_deltas):
        assert worst <= 1
        assert mean < 0.001
    # the LoRAs changed the frames: the slot really held them
    assert _diff(_render(compiled, sequence[1]), _render(compiled))[0] > 10


def test_loras_over_the_slot_rank_are_refused_and_leave_it_as_it_was(eager: Engine, tmp_path: Path) -> None:
    a = write_diffusers(random_lora(1, rank=4), tmp_path / "a.safetensors")
    b = write_diffusers(random_lora(2, rank=2), tmp_path / "b.safetensors")
    loaded = _compiled(rank=5)
    compiled = _engine(loaded)
    with pytest.raises(LoraError) as info:
        _render(compiled, (request(a, name="a"), request(b, name="b")))
    assert str(info.value) == (
        "a, b need rank 6 on blocks.0.attn1.to_k (20 layers over); this worker compiles its experts with "
        "LoRA rank up to 5 per layer (WANFORGE_COMPILE_MAX_LORA_RANK); use fewer or smaller LoRAs"
    )
    slot = [p for n, p in loaded.pipe.transformer.named_parameters() if f".{SLOT_ADAPTER}." in n]
    assert slot and all(not p.any() for p in slot)
    assert np.array_equal(_render(compiled), _render(eager))


def test_no_slot_refuses_loras(tmp_path: Path) -> None:
    a = write_diffusers(random_lora(1, rank=4), tmp_path / "a.safetensors")
    with pytest.raises(LoraError) as info:
        _render(_engine(_compiled(rank=0)), (request(a, name="a"),))
    assert str(info.value) == (
        "a: this worker compiles its experts without LoRA slots (WANFORGE_COMPILE_MAX_LORA_RANK=0)"
    )


@pytest.mark.parametrize(
    ("mode", "rank", "message"),
    [
        ("full", 8, "WANFORGE_COMPILE must be one of off, regional, got 'full'"),
        ("regional", -1, "WANFORGE_COMPILE_MAX_LORA_RANK must be >= 0, got -1"),
    ],
)
def test_bad_compile_options_are_refused(mode: str, rank: int, message: str) -> None:
    with pytest.raises(ValueError) as info:
        check_compile(mode, rank)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("off", "regional", "off", "group_offload"),
            "WANFORGE_COMPILE=regional cannot run with WANFORGE_MEMORY_MODE=group_offload (its per-layer "
            "hooks break the compiled blocks' graphs); use gpu or model_offload",
        ),
        (
            ("off", "regional", "first_block", None),
            "WANFORGE_COMPILE=regional cannot run with WANFORGE_STEP_CACHE (its hooks on the blocks cannot "
            "be compiled); set one of them to off",
        ),
        (
            ("storage", "regional", "off", "gpu"),
            "WANFORGE_COMPILE=regional cannot run with WANFORGE_FP8=storage (its per-layer casting hooks "
            "cannot be compiled); use WANFORGE_FP8=compute (sm89+) or off",
        ),
        (
            ("compute", "off", "off", "model_offload"),
            "WANFORGE_FP8=compute keeps both experts on the GPU (at about half their bf16 size); "
            "WANFORGE_MEMORY_MODE=model_offload cannot be used with it: use gpu or text_encoder_offload, "
            "or WANFORGE_FP8=storage",
        ),
    ],
)
def test_option_pairs_that_cannot_run_together_are_refused(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError) as info:
        _check_combinations(*args)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_fp8_compute_keeps_a_mode_with_both_experts_resident() -> None:
    # unset, the memory plan picks gpu or text_encoder_offload for compute (tests/engine/test_plan.py)
    assert _check_combinations("compute", "regional", "off", None) is None
    assert _check_combinations("compute", "regional", "off", "gpu") == "gpu"
    assert _check_combinations("compute", "off", "off", "text_encoder_offload") == "text_encoder_offload"
    assert _check_combinations("storage", "off", "first_block", None) is None


def test_settings_read_the_compile_options(monkeypatch: pytest.MonkeyPatch) -> None:
    from wanforge.config import Settings

    default = Settings()
    assert (default.compile, default.compile_max_lora_rank, default.compile_backend) == (
        "off",
        128,
        "inductor",
    )
    monkeypatch.setenv("WANFORGE_COMPILE", "regional")
    monkeypatch.setenv("WANFORGE_COMPILE_MAX_LORA_RANK", "32")
    monkeypatch.setenv("WANFORGE_COMPILE_BACKEND", "aot_eager")
    chosen = Settings()
    assert (chosen.compile, chosen.compile_max_lora_rank, chosen.compile_backend) == (
        "regional",
        32,
        "aot_eager",
    )
    monkeypatch.setenv("WANFORGE_COMPILE_MAX_LORA_RANK", "-1")
    with pytest.raises(ValueError, match="compile_max_lora_rank"):
        Settings()


def test_a_compiled_worker_warms_up_the_configured_sizes_before_its_first_job(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from wanforge.config import Settings
    from wanforge.worker import tasks

    warmed: list[list[str]] = []

    def record(_loaded: LoadedModel, resolutions: list[str]) -> dict[str, float]:
        warmed.append(resolutions)
        return {}

    monkeypatch.setattr(tasks, "warm_up", record)
    monkeypatch.setattr(
        tasks, "load_pipeline", lambda *_a, **_k: replace(load_pipeline("demo"), compile="regional")
    )
    settings = Settings(data_dir=tmp_path, compile_warmup=" 720p, 1080p ")
    assert settings.compile_warmup == "720p,1080p"
    tasks.build_tasks(settings)
    assert warmed == [["720p", "1080p"]]
    tasks.build_tasks(settings.model_copy(update={"compile_warmup": ""}))
    assert warmed == [["720p", "1080p"]]
    with pytest.raises(ValueError, match="unknown resolution '4k'; expected 480p, 720p or 1080p"):
        Settings(data_dir=tmp_path, compile_warmup="480p,4k")
