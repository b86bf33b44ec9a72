"""Flow-matching timestep sampling for the two Wan 2.2 experts.

Inference (UniPC with flow sigmas, `flow_shift`) walks sigmas `shift(s)` for `s` evenly spaced in
(0, 1], with `shift(s) = k s / (1 + (k - 1) s)`, and hands the high-noise expert every step with
`t = 1000 sigma >= 1000 boundary`. Training draws `u ~ U(0, 1)` and uses `sigma = shift(u)`, so the
training noise levels follow the same distribution as the inference steps. Each expert samples only
its own side of the boundary: `u` is mapped linearly into the sub-interval of `u` whose shifted
sigma lands on that side (found by inverting the shift), which draws from the shifted distribution
conditioned on the side, in one draw, without rejection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

Expert = Literal["high_noise", "low_noise"]
EXPERTS: tuple[Expert, Expert] = ("high_noise", "low_noise")
NUM_TRAIN_TIMESTEPS = 1000


def shift_sigma(u: torch.Tensor, shift: float) -> torch.Tensor:
    """The flow shift that inference applies to evenly spaced sigmas: k u / (1 + (k - 1) u)."""
    return shift * u / (1 + (shift - 1) * u)


def unshift_sigma(sigma: float, shift: float) -> float:
    """The inverse of `shift_sigma`: the `u` whose shifted sigma is `sigma`."""
    return sigma / (shift - (shift - 1) * sigma)


@dataclass(frozen=True)
class SigmaRange:
    """The sigmas an expert trains on: [low, high] for the high-noise expert, [low, high) below."""

    expert: Expert
    low: float
    high: float
    u_low: float
    u_high: float

    @property
    def timestep_range(self) -> tuple[float, float]:
        return self.low * NUM_TRAIN_TIMESTEPS, self.high * NUM_TRAIN_TIMESTEPS


def expert_sigma_range(expert: Expert, boundary: float, shift: float) -> SigmaRange:
    """The sigma range of an expert and the matching range of the unshifted `u`."""
    if not 0.0 < boundary < 1.0:
        raise ValueError(f"boundary must be in (0, 1), got {boundary}")
    if shift <= 0.0:
        raise ValueError(f"shift must be positive, got {shift}")
    u_boundary = unshift_sigma(boundary, shift)
    if expert == "high_noise":
        return SigmaRange(expert, boundary, 1.0, u_boundary, 1.0)
    if expert == "low_noise":
        return SigmaRange(expert, 0.0, boundary, 0.0, u_boundary)
    raise ValueError(f"unknown expert {expert!r}")


def _float32_at_least(x: float) -> float:
    """The smallest float32 value >= x (as a Python float, which holds it exactly)."""
    y = torch.tensor(x, dtype=torch.float32)
    while float(y) < x:
        y = torch.nextafter(y, torch.tensor(math.inf))
    return float(y)


def _float32_below(x: float) -> float:
    """The largest float32 value < x."""
    y = torch.tensor(x, dtype=torch.float32)
    while float(y) >= x:
        y = torch.nextafter(y, torch.tensor(-math.inf))
    return float(y)


def sample_timesteps(
    expert: Expert, n: int, boundary: float, shift: float, generator: torch.Generator
) -> torch.Tensor:
    """Draw `n` timesteps `t = 1000 sigma` (float32, CPU) for `expert` on its side of the boundary.

    One uniform draw per sample from `generator`; the result is clamped in float32 so that
    rounding can never move a sample across `boundary * 1000` (the comparison inference makes).
    """
    rng = expert_sigma_range(expert, boundary, shift)
    v = torch.rand(n, generator=generator, dtype=torch.float64)
    u = rng.u_low + (rng.u_high - rng.u_low) * v
    t = (shift_sigma(u, shift) * NUM_TRAIN_TIMESTEPS).to(torch.float32)
    boundary_t = boundary * NUM_TRAIN_TIMESTEPS
    if expert == "high_noise":
        return t.clamp(min=_float32_at_least(boundary_t), max=float(NUM_TRAIN_TIMESTEPS))
    return t.clamp(min=0.0, max=_float32_below(boundary_t))


def timesteps_to_sigmas(timesteps: torch.Tensor) -> torch.Tensor:
    return timesteps / NUM_TRAIN_TIMESTEPS
