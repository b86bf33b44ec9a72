from __future__ import annotations

import time

import numpy as np
import pytest

from wanforge.engine.upscale import upscale_frames


def test_upscale_to_1080p_shape_and_flat_colour_is_kept() -> None:
    frames = np.full((3, 64, 112, 3), (10, 128, 250), dtype=np.uint8)
    out = upscale_frames(frames, 1920, 1080)
    assert out.shape == (3, 1080, 1920, 3) and out.dtype == np.uint8
    assert (out == np.array([10, 128, 250], dtype=np.uint8)).all()


def test_upscale_keeps_the_picture_in_place() -> None:
    frames = np.zeros((1, 64, 112, 3), dtype=np.uint8)
    frames[0, :, 56:] = 255  # right half white
    out = upscale_frames(frames, 1920, 1080)[0]
    assert out[:, :900].max() < 10 and out[:, 1020:].min() > 245


def test_same_size_is_returned_as_is_and_a_crop_is_exact() -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(2, 1088, 1920, 3), dtype=np.uint8)
    assert upscale_frames(frames, 1920, 1088) is frames
    assert np.array_equal(upscale_frames(frames, 1920, 1080), frames[:, 4:1084])


def test_threaded_and_serial_agree() -> None:
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, size=(4, 48, 80, 3), dtype=np.uint8)
    assert np.array_equal(upscale_frames(frames, 320, 200, workers=1), upscale_frames(frames, 320, 200))


def test_81_frames_to_1080p_take_a_few_seconds_at_most() -> None:
    frames = np.random.default_rng(2).integers(0, 256, size=(81, 64, 112, 3), dtype=np.uint8)
    started = time.perf_counter()
    out = upscale_frames(frames, 1920, 1080)
    assert out.shape == (81, 1080, 1920, 3)
    assert time.perf_counter() - started < 15.0  # ~1.6 s on 2 idle cores; generous for a shared machine


def test_rejects_float_frames() -> None:
    with pytest.raises(ValueError):
        upscale_frames(np.zeros((1, 8, 8, 3), dtype=np.float32), 16, 16)
