"""Engine fixtures: the demo model loaded once, engines with few steps, small test images."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from wanforge.engine.generate import Engine
from wanforge.engine.loading import LoadedModel, load_pipeline
from wanforge.engine.profiles import ModelProfile

ImageFactory = Callable[..., Image.Image]


def smooth_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A seeded image with gradients and a little noise (a stand-in for a photo)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / max(width - 1, 1), y / max(height - 1, 1), 0.5 + 0.5 * np.sin(x / 7 + y / 5)], -1)
    pixels = np.clip(base * 220 + rng.normal(0, 8, size=base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core machine, OpenMP threads that wait on each other's
    spin barriers make a tiny model 10x slower. Restored after each test."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def make_image() -> ImageFactory:
    return smooth_image


@pytest.fixture(scope="session")
def demo_loaded() -> LoadedModel:
    return load_pipeline("demo")


# The fast test profile, as diffusers' own Wan tests use: 2 steps and 9 frames (8 fps x 1 s + 1).
# Every test whose subject is not the reference sampling defaults runs on it.
FAST_TEST_PROFILE = {"steps": 2, "fps": 8}


@pytest.fixture
def engine_with(demo_loaded: LoadedModel) -> Callable[..., Engine]:
    """``engine_with(steps=5, ...)``: an engine on the shared demo pipeline with the fast test
    profile (:data:`FAST_TEST_PROFILE`) and any further overrides."""

    def make(**overrides: object) -> Engine:
        fields = {**FAST_TEST_PROFILE, **overrides}
        profile: ModelProfile = replace(demo_loaded.profile, **fields)  # type: ignore[arg-type]
        return Engine(replace(demo_loaded, profile=profile))

    return make
