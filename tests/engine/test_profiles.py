from __future__ import annotations

from dataclasses import FrozenInstanceError, replace

import pytest

from wanforge.engine.profiles import DEMO, PROFILES, WAN22_I2V_A14B, WAN_NEGATIVE_PROMPT, get_profile


def test_registry_holds_the_real_and_the_demo_profile() -> None:
    assert set(PROFILES) == {"wan2.2-i2v-a14b", "demo"}
    assert get_profile("wan2.2-i2v-a14b") is WAN22_I2V_A14B
    assert get_profile("demo") is DEMO
    with pytest.raises(ValueError, match="unknown model profile"):
        get_profile("wan2.1")


def test_a14b_reference_sampling_defaults() -> None:
    p = WAN22_I2V_A14B
    assert (p.steps, p.guidance_scale, p.guidance_scale_2, p.boundary_ratio, p.fps) == (40, 3.5, 3.5, 0.9, 16)
    # Wan 2.2's generate.py samples with cfg.sample_shift (5.0) at every size; 480p -> 3.0 is Wan 2.1's
    assert [p.flow_shift_for(r) for r in ("480p", "720p", "1080p")] == [5.0, 5.0, 5.0]
    assert p.num_frames(5) == 81
    assert p.num_frames(8) == 129
    assert p.strategy_1080p == "upscale" and p.generation_area is None


def test_demo_shares_the_sampling_defaults_but_generates_small() -> None:
    sampling = ("steps", "guidance_scale", "guidance_scale_2", "flow_shift", "fps")
    assert all(getattr(DEMO, k) == getattr(WAN22_I2V_A14B, k) for k in sampling)
    assert DEMO.generation_area == 64 * 112


def test_1080p_strategy() -> None:
    assert WAN22_I2V_A14B.generation_resolution("1080p") == "720p"
    assert WAN22_I2V_A14B.generation_resolution("480p") == "480p"
    native = replace(WAN22_I2V_A14B, strategy_1080p="native")
    assert native.generation_resolution("1080p") == "1080p"
    with pytest.raises(ValueError):
        WAN22_I2V_A14B.generation_resolution("2160p")


def test_negative_prompt_default_applies_only_when_empty() -> None:
    assert WAN22_I2V_A14B.negative_prompt_for("") == WAN_NEGATIVE_PROMPT
    assert WAN22_I2V_A14B.negative_prompt_for("   ") == WAN_NEGATIVE_PROMPT
    assert WAN22_I2V_A14B.negative_prompt_for("blurry") == "blurry"


def test_profiles_are_frozen_and_overridable() -> None:
    with pytest.raises(FrozenInstanceError):
        DEMO.steps = 3  # type: ignore[misc]
    assert replace(DEMO, steps=20).steps == 20
    assert DEMO.steps == 40


@pytest.mark.parametrize(
    "overrides",
    [
        {"steps": 0},
        {"boundary_ratio": 1.0},
        {"fps": 0},
        {"strategy_1080p": "tiled"},
        {"generation_area": 10},
        {"cpu_threads": 0},
    ],
)
def test_invalid_profiles_raise(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        replace(DEMO, **overrides)  # type: ignore[arg-type]


def test_num_frames_rejects_zero_duration() -> None:
    with pytest.raises(ValueError):
        DEMO.num_frames(0)
