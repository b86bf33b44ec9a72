"""The ultra-fast (step-distilled) schedule: 4 steps, 2 per expert at the right timesteps, no CFG
pass, the distill LoRAs as adapters with user LoRAs stacked on top, and the standard path after it
unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.engine.conftest import FAST_TEST_PROFILE, smooth_image
from tests.engine.lora_files import high, low, random_lora, request, write_wanforge
from wanforge.engine.generate import (
    Engine,
    FixedSigmasScheduler,
    GenerationRequest,
    distilled_scheduler,
    plan_generation,
)
from wanforge.engine.loading import LoadedModel, load_pipeline
from wanforge.engine.loras import LoraRequest
from wanforge.engine.profiles import DEMO, WAN22_I2V_A14B, DistilledSchedule

# the timesteps the experts see: the step list 1000/750/500/250 shifted by 5.0
SHIFTED = [1000.0, 937.5, 2500.0 / 3.0, 625.0]


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    """A demo pipeline of this module's own (its adapters stay here), tiny generation size."""
    base = load_pipeline("demo")
    return replace(base, profile=replace(base.profile, **FAST_TEST_PROFILE, generation_area=48 * 32))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def engine(loaded: LoadedModel) -> Engine:
    return Engine(loaded, lora_cache_size=8)


@pytest.fixture(scope="module")
def distill(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoraRequest, LoraRequest]:
    root = tmp_path_factory.mktemp("distill")
    h = write_wanforge(random_lora(21), root / "high.safetensors")
    lo = write_wanforge(random_lora(22), root / "low.safetensors", "low_noise")
    return high(h), low(lo)


def fast_request(*loras: LoraRequest, sampling: Any = "ultra_fast") -> GenerationRequest:
    image = smooth_image(48, 32, seed=5)
    return GenerationRequest(
        image, "a cat walks", "", "480p", seed=11, duration_s=1, loras=tuple(loras), sampling=sampling
    )


@pytest.fixture
def calls(loaded: LoadedModel) -> Iterator[list[tuple[str, float]]]:
    """Every expert forward as (expert, timestep), in order."""
    seen: list[tuple[str, float]] = []
    handles = []
    for name in ("transformer", "transformer_2"):

        def hook(_module: Any, _args: Any, kwargs: dict[str, Any], name: str = name) -> None:
            seen.append((name, float(kwargs["timestep"].flatten()[0])))

        handles.append(getattr(loaded.pipe, name).register_forward_pre_hook(hook, with_kwargs=True))
    yield seen
    for handle in handles:
        handle.remove()


def render(engine: Engine, req: GenerationRequest) -> np.ndarray:
    with torch.random.fork_rng(devices=[]):
        frames, _plan = engine.render(req)
    return frames


def test_the_reference_profile_defaults_are_the_distillers() -> None:
    for profile in (WAN22_I2V_A14B, DEMO):
        fast = profile.ultra_fast
        assert fast.step_list == (1000, 750, 500, 250)
        assert (fast.shift, fast.guidance_scale, fast.guidance_scale_2) == (5.0, 1.0, 1.0)
    assert WAN22_I2V_A14B.boundary_ratio == 0.9


def test_the_plan_has_four_fixed_steps_and_no_guidance() -> None:
    plan = plan_generation(WAN22_I2V_A14B, fast_request())
    assert (plan.steps, plan.flow_shift, plan.guidance_scale, plan.guidance_scale_2) == (4, 5.0, 1.0, 1.0)
    assert plan.sigmas == (1.0, 0.75, 0.5, 0.25)
    assert plan.cfg is False
    standard = plan_generation(WAN22_I2V_A14B, fast_request(sampling="standard"))
    assert (standard.steps, standard.sigmas, standard.cfg) == (40, None, True)


def test_the_scheduler_runs_the_shifted_step_list_with_euler_steps() -> None:
    scheduler = distilled_scheduler({"num_train_timesteps": 1000}, (1.0, 0.75, 0.5, 0.25), 5.0)
    scheduler.set_timesteps(4)
    assert scheduler.timesteps.tolist() == pytest.approx(SHIFTED, abs=1e-3)
    assert scheduler.sigmas.tolist() == pytest.approx([1.0, 0.9375, 5 / 6, 0.625, 0.0], abs=1e-6)
    # LightX2V's step: x <- x + (sigma_next - sigma) * v, to sigma 0 after the last step
    sigmas = [1.0, 0.9375, 5 / 6, 0.625, 0.0]
    x, expected = torch.ones(2), 1.0
    for k, t in enumerate(scheduler.timesteps):
        x = scheduler.step(torch.full((2,), k + 1.0), t, x, return_dict=False)[0]  # type: ignore[arg-type]
        expected += (sigmas[k + 1] - sigmas[k]) * (k + 1)
    assert x.tolist() == pytest.approx([expected] * 2, abs=1e-6)
    with pytest.raises(ValueError, match="this schedule has 4 steps, the pipeline asked for 3"):
        scheduler.set_timesteps(3)


def test_a_step_list_that_is_not_decreasing_is_refused() -> None:
    with pytest.raises(
        ValueError, match=r"step_list must be decreasing timesteps in 1\.\.1000, got \[750, 1000\]"
    ):
        DistilledSchedule(step_list=(750, 1000))


def test_each_expert_runs_two_timesteps_once_each_without_cfg(
    engine: Engine, distill: tuple[LoraRequest, LoraRequest], calls: list[tuple[str, float]]
) -> None:
    render(engine, fast_request(*distill))
    assert [name for name, _ in calls] == ["transformer", "transformer", "transformer_2", "transformer_2"]
    assert [t for _, t in calls] == pytest.approx(SHIFTED, abs=1e-3)
    assert all(t >= 900 for name, t in calls if name == "transformer")
    assert all(t < 900 for name, t in calls if name == "transformer_2")


def test_the_standard_path_runs_a_cfg_pass_per_step(engine: Engine, calls: list[tuple[str, float]]) -> None:
    render(engine, fast_request(sampling="standard"))
    assert len(calls) == 2 * FAST_TEST_PROFILE["steps"]  # cond + uncond each step


def test_generate_reports_the_schedule_and_the_distill_adapters(
    engine: Engine, distill: tuple[LoraRequest, LoraRequest]
) -> None:
    steps: list[tuple[int, int]] = []
    with torch.random.fork_rng(devices=[]):
        result = engine.generate(fast_request(*distill), on_step=lambda i, n: steps.append((i, n)))
    assert (result.sampling, result.steps, result.cfg) == ("ultra_fast", 4, False)
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert [(a["name"], a["expert"]) for a in result.adapters] == [
        ("high.safetensors", "high_noise"),
        ("low.safetensors", "low_noise"),
    ]


def test_user_loras_stack_on_the_distill_loras(
    engine: Engine, distill: tuple[LoraRequest, LoraRequest], tmp_path: Path
) -> None:
    user = request(write_wanforge(random_lora(23), tmp_path / "user.safetensors"))
    distilled = render(engine, fast_request(*distill))
    stacked = render(engine, fast_request(*distill, user))
    assert np.abs(stacked - distilled).max() > 1e-2
    # the same adapters in another order are the same sum of deltas
    assert np.abs(render(engine, fast_request(user, *distill)) - stacked).max() <= 1e-5
    assert np.abs(render(engine, fast_request(*distill)) - distilled).max() == 0.0


def test_the_standard_path_after_an_ultra_fast_job_is_unchanged(
    engine: Engine, loaded: LoadedModel, distill: tuple[LoraRequest, LoraRequest]
) -> None:
    before = render(engine, fast_request(sampling="standard"))
    render(engine, fast_request(*distill))
    assert not isinstance(loaded.pipe.scheduler, FixedSigmasScheduler)
    assert np.array_equal(render(engine, fast_request(sampling="standard")), before)


def test_distill_loras_change_the_frames(engine: Engine, distill: tuple[LoraRequest, LoraRequest]) -> None:
    without = render(engine, fast_request())
    assert np.abs(render(engine, fast_request(*distill)) - without).max() > 1e-2
