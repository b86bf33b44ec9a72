"""Decoding at 16 fps, scene cuts, motion-ranked windows and aspect buckets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.training.synthetic import square_x, synthetic_frames
from wanforge.training.analysis import (
    Bucket,
    ClipAnalyzer,
    choose_bucket,
    choose_windows,
    detect_cuts,
    make_buckets,
    resize_cover,
    split_segments,
    window_length,
)
from wanforge.training.videos import (
    DecodeLimits,
    VideoDecodeError,
    _to_rgb,
    iter_frames_16fps,
    probe_video,
    read_frames_16fps,
)

Clip = Callable[..., Path]


def _source_indices(frames: np.ndarray, speed: int) -> list[int]:
    return [round(square_x(f) / speed) for f in frames]


def test_resample_30fps_to_16fps(clip: Clip) -> None:
    path = clip("thirty.mp4", fps=30, frames=60, width=160, height=48, speed=2)
    info = probe_video(path)
    assert (info.fps, info.duration_s, info.width, info.height, info.frames) == (30.0, 2.0, 160, 48, 60)
    frames = read_frames_16fps(path)
    assert frames.shape == (32, 48, 160, 3) and frames.dtype == np.uint8
    # output k shows the source frame nearest to k/16 s; ties (k = 4, 12, ...) go to the earlier
    expected = [int(np.floor(k * 30 / 16 + 0.5 - 1e-9)) for k in range(32)]
    assert _source_indices(frames, 2) == expected


def test_resample_8fps_to_16fps_repeats_frames(clip: Clip) -> None:
    path = clip("eight.mkv", fps=8, frames=16, width=160, height=48, speed=2)
    frames = read_frames_16fps(path)
    assert frames.shape[0] == 32
    assert _source_indices(frames, 2) == [k // 2 for k in range(32)]


def test_max_frames_and_gif(clip: Clip) -> None:
    path = clip("anim.gif", fps=10, frames=20)
    info = probe_video(path)
    assert (info.fps, info.duration_s, info.frames) == (10.0, 2.0, 20)
    assert read_frames_16fps(path).shape == (32, 48, 64, 3)
    assert read_frames_16fps(path, max_frames=7).shape[0] == 7


def test_corrupt_and_oversized_videos(tmp_path: Path, clip: Clip) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(VideoDecodeError) as info:
        probe_video(bad)
    assert str(tmp_path) not in str(info.value)
    with pytest.raises(VideoDecodeError):
        read_frames_16fps(bad)
    big = clip("big.webm", frames=5, width=64, height=48)
    with pytest.raises(VideoDecodeError, match="frame size 64x48 is over the limit of 1000 pixels"):
        next(iter_frames_16fps(big, limits=DecodeLimits(max_pixels=1000)))


def test_scene_cut_detected_and_never_crossed(clip: Clip) -> None:
    path = clip("cut.mp4", frames=48, width=96, height=48, cut_at=20, speed=1)
    analyzer = ClipAnalyzer.of(iter_frames_16fps(path))
    motion = analyzer.motion()
    assert analyzer.frames == 48 and motion.shape == (47,)
    assert detect_cuts(motion) == [20]
    plan = choose_windows(motion, [20], frames_per_window=17, max_windows=4)
    assert plan.segments == [(0, 20), (20, 48)]
    assert [w.length for w in plan.windows] == [17, 17]
    for w in plan.windows:
        assert w.start + w.length <= 20 or w.start >= 20


def test_no_cut_in_a_moving_clip() -> None:
    frames = synthetic_frames(60, 96, 48, speed=1)
    assert detect_cuts(ClipAnalyzer.of(frames).motion()) == []


def test_repeated_frames_are_not_cuts() -> None:
    fast = np.repeat(synthetic_frames(16, 64, 48), 2, axis=0)  # an 8 fps clip shown at 16 fps
    assert detect_cuts(ClipAnalyzer.of(fast).motion()) == []
    with_cut = np.repeat(synthetic_frames(16, 64, 48, cut_at=8), 2, axis=0)
    assert detect_cuts(ClipAnalyzer.of(with_cut).motion()) == [16]


def test_window_prefers_motion() -> None:
    frames = synthetic_frames(80, 96, 48, static_frames=40, speed=1)
    motion = ClipAnalyzer.of(frames).motion()
    assert motion[:39].max() == 0.0 and motion[41:].min() > 0.0
    plan = choose_windows(motion, [], frames_per_window=17, max_windows=1)
    (window,) = plan.windows
    assert window.start >= 40 and window.length == 17 and window.motion > 0
    # with room for four, all four fit and the order is by start
    plan4 = choose_windows(motion, [], frames_per_window=17, max_windows=4)
    assert [w.length for w in plan4.windows] == [17] * 4
    assert [w.start for w in plan4.windows] == sorted(w.start for w in plan4.windows)
    assert choose_windows(motion, [], frames_per_window=17, max_windows=4) == plan4


def test_short_segments_get_shorter_windows_or_are_dropped() -> None:
    assert window_length(200, 81) == 81
    assert window_length(40, 81) == 37
    assert window_length(5, 81) == 5
    assert window_length(4, 81) is None
    motion = np.ones(29)  # 30 frames, cuts at 3 and 10: shots of 3, 7 and 20 frames
    plan = choose_windows(motion, [3, 10], frames_per_window=81, max_windows=4)
    assert plan.dropped == [(0, 3)]
    assert [(w.start, w.length) for w in plan.windows] == [(3, 5), (10, 17)]
    assert split_segments(30, [10, 3, 3, 0, 30]) == [(0, 3), (3, 10), (10, 30)]


def test_buckets_default_area() -> None:
    buckets = make_buckets((480, 832))
    assert all(b.width % 16 == 0 and b.height % 16 == 0 for b in buckets)
    assert choose_bucket(1920, 1080, buckets) == Bucket(832, 480)
    assert choose_bucket(1080, 1920, buckets) == Bucket(480, 832)
    assert choose_bucket(512, 512, buckets) == Bucket(624, 624)
    assert choose_bucket(640, 480, buckets) == Bucket(736, 544)
    assert make_buckets((832, 480)) == buckets
    for b in buckets:
        assert abs(b.width * b.height - 480 * 832) / (480 * 832) < 0.05


def test_buckets_tiny_area() -> None:
    buckets = make_buckets((32, 48))
    assert buckets == [Bucket(32, 32), Bucket(48, 32), Bucket(32, 48)]
    assert choose_bucket(64, 48, buckets) == Bucket(48, 32)
    with pytest.raises(ValueError, match="multiples of 16"):
        make_buckets((30, 48))


def test_resize_cover_center_crops() -> None:
    frame = np.zeros((90, 160, 3), dtype=np.uint8)
    frame[:, :35] = (255, 0, 0)  # left and right bands fall outside a 1:1 crop
    frame[:, 125:] = (0, 0, 255)
    frame[:, 35:125] = (0, 255, 0)
    out = resize_cover(frame, Bucket(32, 32))
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert out[:, :, 1].min() > 200 and out[:, :, 0].max() < 60 and out[:, :, 2].max() < 60
    tall = resize_cover(frame, Bucket(16, 48))
    assert tall.shape == (48, 16, 3)


class _RotatedFrame:
    """A decoded frame whose display matrix says "rotate 90 degrees clockwise" (a phone video)."""

    rotation = -90.0  # av_display_rotation_get: counterclockwise degrees

    def __init__(self, image: np.ndarray) -> None:
        self.image = image

    def to_ndarray(self, format: str) -> np.ndarray:
        assert format == "rgb24"
        return self.image.copy()


def test_display_rotation_is_applied() -> None:
    image = np.zeros((4, 6, 3), dtype=np.uint8)
    image[0, 0] = 255  # top-left marker
    out = _to_rgb(_RotatedFrame(image))  # type: ignore[arg-type]
    assert out.shape == (6, 4, 3)
    assert out[0, -1].tolist() == [255, 255, 255]  # rotated clockwise: top-left goes to top-right
    assert not out.flags.writeable
