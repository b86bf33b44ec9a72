"""The real open_nsfw checker, loaded once (0.2 s), on one thread (the machine is shared)."""

from __future__ import annotations

import numpy as np
import pytest

from wanforge.safety.opennsfw import OpenNsfwChecker


@pytest.fixture(scope="session")
def opennsfw() -> OpenNsfwChecker:
    return OpenNsfwChecker(threads=1)


def made_images() -> dict[str, np.ndarray]:
    """Images made here: flat colours, a gradient, seeded noise, in a few sizes."""
    y, x = np.mgrid[0:72, 0:128].astype(np.float32)
    gradient = np.stack([x / 127 * 255, y / 71 * 255, np.full_like(x, 128)], -1).astype(np.uint8)
    noise = np.random.default_rng(7).integers(0, 256, size=(64, 96, 3), dtype=np.uint8)
    return {
        "black": np.zeros((32, 32, 3), np.uint8),
        "white": np.full((48, 64, 3), 255, np.uint8),
        "skin_tone": np.full((64, 64, 3), (220, 170, 140), np.uint8),
        "gradient": gradient,
        "noise": noise,
    }
