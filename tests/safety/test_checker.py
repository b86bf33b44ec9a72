"""The real open_nsfw detector on images made in the test, frame sampling, and the registry."""

from __future__ import annotations

import numpy as np
import pytest

from tests.safety.conftest import made_images
from wanforge.config import Settings
from wanforge.safety.checker import build_checker, check_frames, sample_indices
from wanforge.safety.opennsfw import OpenNsfwChecker


def test_scores_are_probabilities_and_deterministic(opennsfw: OpenNsfwChecker) -> None:
    images = list(made_images().values())
    first = opennsfw.scores(images)
    assert len(first) == len(images)
    assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in first)
    # the same input gives the same score, from this checker and from a freshly loaded one
    assert opennsfw.scores(images) == first
    assert OpenNsfwChecker(threads=1).scores(images) == first
    # a real model: different pictures, different scores
    assert len({round(s, 6) for s in first}) == len(images)
    assert opennsfw.scores([]) == []


def test_noise_and_flat_colours_score_low(opennsfw: OpenNsfwChecker) -> None:
    scores = dict(zip(made_images(), opennsfw.scores(list(made_images().values())), strict=True))
    assert all(score < 0.5 for score in scores.values()), scores


def test_sample_indices() -> None:
    assert sample_indices(81, 8) == [0, 11, 23, 34, 46, 57, 69, 80]
    assert sample_indices(9, 4) == [0, 3, 5, 8]
    assert sample_indices(5, 8) == [0, 1, 2, 3, 4]
    assert sample_indices(81, 1) == [40]
    assert sample_indices(1, 8) == [0]
    with pytest.raises(ValueError, match="no frames"):
        sample_indices(0, 8)


def test_a_video_scores_as_its_worst_sampled_frame(opennsfw: OpenNsfwChecker) -> None:
    images = made_images()
    frames = np.stack([np.full((64, 64, 3), 30, np.uint8)] * 9)
    frames[4] = images["skin_tone"]  # sampled: 0, 2 (rounded), 4, 6, 8 of 9
    expected = max(opennsfw.scores([frames[0], frames[4]]))
    verdict = check_frames(opennsfw, frames, samples=5, threshold=0.99)
    assert verdict.score == pytest.approx(expected, abs=1e-6) and not verdict.flagged
    # a threshold of 0 flags everything
    assert check_frames(opennsfw, frames, samples=2, threshold=0.0).flagged
    with pytest.raises(ValueError, match="uint8 frames"):
        check_frames(opennsfw, frames.astype(np.float32), samples=2, threshold=0.5)


def test_registry() -> None:
    assert build_checker(Settings(content_checker="none")) is None
    checker = build_checker(Settings(content_checker="opennsfw"))
    assert checker is not None and checker.name == "opennsfw"
    with pytest.raises(ValueError, match="content_checker"):
        Settings(content_checker="nudenet")  # type: ignore[arg-type]
