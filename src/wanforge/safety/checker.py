"""The checker interface, the registry `WANFORGE_CONTENT_CHECKER` picks from, and video verdicts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from wanforge.config import Settings

Frame = np.ndarray  # uint8 RGB (H, W, 3)


class ContentChecker(Protocol):
    """Scores images: the probability in [0, 1] that each is not safe for work."""

    name: str

    def scores(self, images: Sequence[Frame]) -> list[float]: ...


@dataclass(frozen=True)
class Verdict:
    """One checked output (a video or an image): its highest frame score and the flag."""

    score: float
    flagged: bool


def sample_indices(count: int, samples: int) -> list[int]:
    """`samples` evenly spaced frame indices of `count` frames, first and last included."""
    if count < 1:
        raise ValueError("no frames to check")
    if samples >= count:
        return list(range(count))
    if samples == 1:
        return [count // 2]
    return sorted({round(i * (count - 1) / (samples - 1)) for i in range(samples)})


def check_frames(checker: ContentChecker, frames: np.ndarray, samples: int, threshold: float) -> Verdict:
    """Check `samples` evenly spaced frames of uint8 video frames (F, H, W, 3): the video scores
    as its worst frame, and is flagged when that score reaches `threshold`."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames (F, H, W, 3), got {frames.dtype} {frames.shape}")
    picked = [frames[i] for i in sample_indices(int(frames.shape[0]), samples)]
    score = max(checker.scores(picked))
    return Verdict(score=score, flagged=score >= threshold)


def _opennsfw(settings: Settings) -> ContentChecker:
    from wanforge.safety.opennsfw import OpenNsfwChecker  # onnxruntime: only when chosen

    return OpenNsfwChecker()


CHECKERS: dict[str, Callable[[Settings], ContentChecker]] = {"opennsfw": _opennsfw}


def build_checker(settings: Settings) -> ContentChecker | None:
    """The configured checker, loaded; None for `none` (then has_nsfw_contents stays empty)."""
    if settings.content_checker == "none":
        return None
    factory = CHECKERS.get(settings.content_checker)
    if factory is None:
        known = ", ".join(sorted([*CHECKERS, "none"]))
        raise ValueError(f"unknown WANFORGE_CONTENT_CHECKER {settings.content_checker!r}; known: {known}")
    return factory(settings)
