"""Temporal analysis of a clip at 16 fps: motion, scene cuts, training windows, size buckets.

- Motion between two frames is the mean absolute difference of 64x64 grayscale thumbnails,
  in 0..255 grey levels; a window's motion is the mean over its frame pairs.
- A scene cut is a frame pair whose difference is both at least ``min_cut_diff`` and at least
  ``cut_ratio`` times the median difference of the pairs around it (an adaptive threshold, so a
  clip that moves a lot everywhere does not cut everywhere).
- Windows (4k+1 frames, Wan's frame count rule) never cross a cut. Per clip, up to
  ``max_windows`` non-overlapping windows are chosen to cover the most frames first and then to
  have the most motion; the choice is deterministic.
- Buckets: a few standard aspect ratios at the training pixel area, sides multiples of 16; a
  clip goes to the bucket nearest its aspect ratio and is resized to cover it, then
  center-cropped.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from wanforge.engine.sizing import fit_image

__all__ = [
    "STANDARD_RATIOS",
    "Bucket",
    "ClipAnalyzer",
    "MotionStats",
    "Window",
    "WindowPlan",
    "choose_bucket",
    "choose_windows",
    "detect_cuts",
    "make_buckets",
    "resize_cover",
    "split_segments",
    "thumbnail",
    "window_length",
]

THUMB_SIZE = 64
MIN_WINDOW_FRAMES = 5
STANDARD_RATIOS: tuple[tuple[int, int], ...] = ((1, 1), (4, 3), (3, 4), (3, 2), (2, 3), (16, 9), (9, 16))


def thumbnail(frame: np.ndarray, size: int = THUMB_SIZE) -> np.ndarray:
    """A (size, size) float32 grayscale thumbnail of an RGB uint8 frame."""
    image = Image.fromarray(frame).resize((size, size), Image.Resampling.BOX).convert("L")
    return np.asarray(image, dtype=np.float32)


@dataclass
class ClipAnalyzer:
    """Feed frames one at a time; keeps only the previous thumbnail and one number per pair."""

    frames: int = 0
    diffs: list[float] = field(default_factory=list)
    _prev: np.ndarray | None = None

    def add(self, frame: np.ndarray) -> None:
        thumb = thumbnail(frame)
        if self._prev is not None:
            self.diffs.append(float(np.abs(thumb - self._prev).mean()))
        self._prev = thumb
        self.frames += 1

    def motion(self) -> np.ndarray:
        """Frame-pair motion, shape (frames - 1,)."""
        return np.asarray(self.diffs, dtype=np.float64)

    @classmethod
    def of(cls, frames: Iterable[np.ndarray]) -> ClipAnalyzer:
        analyzer = cls()
        for frame in frames:
            analyzer.add(frame)
        return analyzer


def detect_cuts(
    motion: np.ndarray,
    *,
    min_cut_diff: float = 12.0,
    cut_ratio: float = 3.0,
    radius: int = 8,
    repeat_below: float = 1.0,
) -> list[int]:
    """Indices of the frames that start a new shot (pair ``i`` is a cut -> frame ``i + 1``).

    Pair ``i`` is a cut when its motion is at least ``min_cut_diff`` and at least ``cut_ratio``
    times the median motion of the ``radius`` pairs on each side, leaving out pairs under
    ``repeat_below`` (a repeated frame, as an 8 fps source shows at 16 fps).
    """
    cuts: list[int] = []
    n = len(motion)
    for i in range(n):
        value = float(motion[i])
        if value < min_cut_diff:
            continue
        around = np.concatenate([motion[max(0, i - radius) : i], motion[i + 1 : i + 1 + radius]])
        around = around[around >= repeat_below]  # repeated frames (low-fps sources) say nothing
        baseline = float(np.median(around)) if around.size else 0.0
        if value >= cut_ratio * max(baseline, 1.0):
            cuts.append(i + 1)
    return cuts


def split_segments(frames: int, cuts: Iterable[int]) -> list[tuple[int, int]]:
    """``[start, end)`` frame ranges between cuts."""
    bounds = [0, *sorted(c for c in set(cuts) if 0 < c < frames), frames]
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def window_length(available: int, frames_per_window: int, min_frames: int = MIN_WINDOW_FRAMES) -> int | None:
    """``frames_per_window`` if it fits, else the largest 4k+1 <= ``available``; None below ``min_frames``."""
    n = min(frames_per_window, available)
    n = (n - 1) // 4 * 4 + 1 if n >= 1 else 0
    return n if n >= min_frames else None


@dataclass(frozen=True)
class Window:
    start: int  # first frame, in 16 fps frames from the clip start
    length: int  # 4k+1 frames
    motion: float  # mean frame-pair motion inside the window


@dataclass(frozen=True)
class WindowPlan:
    windows: list[Window]  # sorted by start
    segments: list[tuple[int, int]]
    dropped: list[tuple[int, int]]  # segments too short for the minimum window


@dataclass(frozen=True)
class MotionStats:
    min: float
    mean: float
    max: float

    @classmethod
    def of(cls, values: Iterable[float]) -> MotionStats:
        arr = np.asarray(list(values), dtype=np.float64)
        if arr.size == 0:
            return cls(0.0, 0.0, 0.0)
        return cls(round(float(arr.min()), 3), round(float(arr.mean()), 3), round(float(arr.max()), 3))


# (frames covered, total motion, ((start, length), ...)) -- compared on the first two
_Choice = tuple[int, float, tuple[tuple[int, int], ...]]


def _better(a: _Choice | None, b: _Choice | None) -> bool:
    return b is not None and (a is None or (b[0], b[1]) > (a[0], a[1]))


def _segment_options(pair_sums: np.ndarray, start: int, end: int, n: int, k_max: int) -> list[_Choice | None]:
    """Best choice of exactly j windows of n frames inside [start, end), for j = 0..k_max."""
    # best[j][p]: best j windows inside [start, start + p)
    length = end - start
    best: list[list[_Choice | None]] = [[(0, 0.0, ())] * (length + 1)]
    for j in range(1, k_max + 1):
        row: list[_Choice | None] = [None] * (length + 1)
        for p in range(n, length + 1):
            keep = row[p - 1]
            prev = best[j - 1][p - n]
            take: _Choice | None = None
            if prev is not None:
                s = start + p - n
                gain = float(pair_sums[s + n - 1] - pair_sums[s])
                take = (prev[0] + n, prev[1] + gain, (*prev[2], (s, n)))
            row[p] = take if _better(keep, take) else keep
        best.append(row)
    return [row[length] for row in best]


def choose_windows(
    motion: np.ndarray,
    cuts: Iterable[int],
    *,
    frames_per_window: int = 81,
    max_windows: int = 4,
    min_frames: int = MIN_WINDOW_FRAMES,
) -> WindowPlan:
    """Pick up to ``max_windows`` non-overlapping 4k+1 windows that never cross a cut."""
    frames = len(motion) + 1
    segments = split_segments(frames, cuts)
    pair_sums = np.concatenate([[0.0], np.cumsum(motion, dtype=np.float64)])
    dropped: list[tuple[int, int]] = []
    combined: dict[int, _Choice] = {0: (0, 0.0, ())}
    for start, end in segments:
        n = window_length(end - start, frames_per_window, min_frames)
        if n is None:
            dropped.append((start, end))
            continue
        k_max = min(max_windows, (end - start) // n)
        options = _segment_options(pair_sums, start, end, n, k_max)
        merged = dict(combined)
        for have, choice in combined.items():
            for j, option in enumerate(options[1:], start=1):
                if option is None or have + j > max_windows:
                    continue
                candidate = (choice[0] + option[0], choice[1] + option[1], choice[2] + option[2])
                if _better(merged.get(have + j), candidate):
                    merged[have + j] = candidate
        combined = merged
    best = max(combined.values(), key=lambda c: (c[0], c[1]))
    windows = [
        Window(start=s, length=n, motion=float(motion[s : s + n - 1].mean())) for s, n in sorted(best[2])
    ]
    return WindowPlan(windows=windows, segments=segments, dropped=dropped)


@dataclass(frozen=True)
class Bucket:
    width: int
    height: int

    @property
    def name(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def ratio(self) -> float:
        return self.width / self.height


def _round16(x: float) -> int:
    return max(16, round(x / 16) * 16)


def make_buckets(area: tuple[int, int] = (480, 832)) -> list[Bucket]:
    """Standard aspect buckets with the pixel area of ``area`` (two sides, order irrelevant).

    The landscape ratio nearest to ``area``'s own shape is ``area`` itself (so (480, 832) gives
    832x480 for 16:9 and 480x832 for 9:16); the others are rounded to multiples of 16.
    """
    short, long = sorted(area)
    if short < 16 or short % 16 or long % 16:
        raise ValueError(f"area sides must be positive multiples of 16, got {area}")
    pixels = short * long
    ref = math.log(long / short)
    landscape = [r for r in STANDARD_RATIOS if r[0] >= r[1]]
    nearest = min(landscape, key=lambda r: abs(math.log(r[0] / r[1]) - ref))
    buckets: list[Bucket] = []
    for w, h in STANDARD_RATIOS:
        if (w, h) == nearest:
            bucket = Bucket(long, short)
        elif (h, w) == nearest:
            bucket = Bucket(short, long)
        else:
            r = w / h
            bucket = Bucket(_round16(math.sqrt(pixels * r)), _round16(math.sqrt(pixels / r)))
        if bucket not in buckets:
            buckets.append(bucket)
    return buckets


def choose_bucket(width: int, height: int, buckets: list[Bucket]) -> Bucket:
    """The bucket whose aspect ratio is nearest (in log scale) to ``width / height``."""
    ratio = math.log(width / height)
    return min(buckets, key=lambda b: abs(math.log(b.ratio) - ratio))


def resize_cover(frame: np.ndarray, bucket: Bucket) -> np.ndarray:
    """Resize an RGB frame to cover the bucket, center-cropping the overflow (bicubic)."""
    image = fit_image(Image.fromarray(frame), bucket.width, bucket.height, Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8)
