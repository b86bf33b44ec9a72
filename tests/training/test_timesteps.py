"""Timestep sampling: each expert stays on its side of the boundary, with the inference shift."""

from __future__ import annotations

import pytest
import torch

from wanforge.engine.demo import build_scheduler
from wanforge.training.timesteps import (
    EXPERTS,
    expert_sigma_range,
    sample_timesteps,
    shift_sigma,
    unshift_sigma,
)

N = 200_000


@pytest.mark.parametrize(("boundary", "shift"), [(0.9, 5.0), (0.9, 3.0), (0.875, 1.0), (0.5, 12.0)])
def test_each_expert_samples_only_its_side_of_the_boundary(boundary: float, shift: float) -> None:
    generator = torch.Generator().manual_seed(0)
    high = sample_timesteps("high_noise", N, boundary, shift, generator)
    low = sample_timesteps("low_noise", N, boundary, shift, generator)
    boundary_t = boundary * 1000  # what the pipeline compares each timestep with
    assert high.dtype == low.dtype == torch.float32
    assert bool((high >= boundary_t).all()) and bool((high <= 1000).all())
    assert bool((low < boundary_t).all()) and bool((low >= 0).all())
    # the whole of each side is reached
    assert float(high.min()) - boundary_t < 1.0 and 1000 - float(high.max()) < 1.0
    assert float(low.min()) < 1.0 and boundary_t - float(low.max()) < 1.0


def test_the_boundary_itself_belongs_to_the_high_noise_expert() -> None:
    # u drawn as 0 maps exactly onto the boundary; rounding never puts it on the wrong side
    rng = expert_sigma_range("high_noise", 0.9, 5.0)
    assert shift_sigma(torch.tensor(rng.u_low, dtype=torch.float64), 5.0).item() == pytest.approx(0.9)
    assert rng.timestep_range == (900.0, 1000.0)
    assert expert_sigma_range("low_noise", 0.9, 5.0).timestep_range == (0.0, 900.0)


def test_samples_follow_the_shifted_schedule_that_inference_walks() -> None:
    """Quantiles per expert match the UniPC flow schedule with shift 5 at 1000 steps."""
    scheduler = build_scheduler(shift=5.0)
    scheduler.set_timesteps(1000)
    walked = scheduler.timesteps.to(torch.float32)
    share_high = float((walked >= 900).float().mean())
    assert share_high == pytest.approx(1 - unshift_sigma(0.9, 5.0), abs=0.002)  # 0.357 of the steps

    generator = torch.Generator().manual_seed(1)
    qs = torch.tensor([0.1, 0.5, 0.9])
    for expert, side in (("high_noise", walked >= 900), ("low_noise", walked < 900)):
        drawn = sample_timesteps(expert, N, 0.9, 5.0, generator)  # type: ignore[arg-type]
        torch.testing.assert_close(drawn.quantile(qs), walked[side].quantile(qs), rtol=0, atol=3.0)

    # the two experts' draws, mixed in the shares inference gives them, are the full distribution
    high = sample_timesteps("high_noise", round(N * share_high), 0.9, 5.0, generator)
    low = sample_timesteps("low_noise", N - high.numel(), 0.9, 5.0, generator)
    pooled = torch.cat([high, low])
    median = 1000 * shift_sigma(torch.tensor(0.5, dtype=torch.float64), 5.0).item()  # 833.3
    assert float(pooled.median()) == pytest.approx(median, abs=2.0)
    assert float(walked.median()) == pytest.approx(median, abs=2.0)


def test_unshift_inverts_shift() -> None:
    u = torch.linspace(0, 1, 101, dtype=torch.float64)
    for shift in (1.0, 3.0, 5.0):
        back = torch.tensor(
            [unshift_sigma(float(s), shift) for s in shift_sigma(u, shift)], dtype=torch.float64
        )
        torch.testing.assert_close(back, u)


def test_sampling_is_reproducible_and_uses_one_draw_per_sample() -> None:
    a = torch.Generator().manual_seed(3)
    b = torch.Generator().manual_seed(3)
    for expert in EXPERTS:
        assert torch.equal(
            sample_timesteps(expert, 64, 0.9, 5.0, a), sample_timesteps(expert, 64, 0.9, 5.0, b)
        )
    plain = torch.Generator().manual_seed(3)
    torch.rand(64 * 2, generator=plain, dtype=torch.float64)
    assert torch.equal(a.get_state(), plain.get_state())  # one uniform per sample: no retries


@pytest.mark.parametrize(("boundary", "shift"), [(0.0, 5.0), (1.0, 5.0), (0.9, 0.0)])
def test_bad_boundary_or_shift_is_refused(boundary: float, shift: float) -> None:
    with pytest.raises(ValueError):
        sample_timesteps("high_noise", 1, boundary, shift, torch.Generator())
