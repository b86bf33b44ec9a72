"""Video probing and decoding at Wan's 16 frames per second, with guards for hostile files.

Every container PyAV (FFmpeg) can read is accepted, GIFs included. Frames are resampled to
16 fps by nearest presentation timestamp: output frame ``k`` shows the source frame whose
time (relative to the first frame) is closest to ``k / 16`` s, ties going to the earlier
frame, so a 30 fps source drops frames and an 8 fps source shows each frame twice. A display
rotation (phone videos) is applied. Any decoder failure is a :class:`VideoDecodeError`
whose message names no server-side path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.container import InputContainer
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from wanforge.training.errors import VideoDecodeError

__all__ = [
    "TARGET_FPS",
    "DecodeLimits",
    "VideoDecodeError",
    "VideoInfo",
    "iter_frames_16fps",
    "probe_video",
    "read_frames_16fps",
]

TARGET_FPS = 16
_DECODE_ERRORS = (av.FFmpegError, OSError, ValueError, EOFError, IndexError, RuntimeError)


@dataclass(frozen=True)
class DecodeLimits:
    max_pixels: int = 4096 * 4096  # per frame; refused above
    max_source_frames: int = 18_000  # decoding stops after this many source frames (5 min at 60 fps)
    max_frames: int = TARGET_FPS * 300  # 16 fps frames yielded at most (5 min); later ones are dropped
    max_array_bytes: int = 2 * 1024**3  # read_frames_16fps refuses to build a larger array


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` reads; the one description of a video file in wanforge (the
    engine's MP4 output is checked with it too)."""

    fps: float
    duration_s: float
    width: int  # as displayed (after rotation)
    height: int
    frames: int  # source frames (packets) in the video stream
    codec: str = ""  # FFmpeg's decoder name, e.g. "h264"
    pix_fmt: str = ""  # e.g. "yuv420p"


def _describe(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc).split(": '")[0] or type(exc).__name__
    return str(text)


def _open(path: Path) -> tuple[InputContainer, VideoStream]:
    try:
        container = av.open(str(path), mode="r")
    except _DECODE_ERRORS as exc:
        raise VideoDecodeError(f"not a readable video ({_describe(exc)})") from exc
    if not container.streams.video:
        container.close()
        raise VideoDecodeError("the file has no video stream")
    return container, container.streams.video[0]


def _check_size(width: int, height: int, limits: DecodeLimits) -> None:
    if width <= 0 or height <= 0:
        raise VideoDecodeError(f"invalid frame size {width}x{height}")
    if width * height > limits.max_pixels:
        raise VideoDecodeError(
            f"frame size {width}x{height} is over the limit of {limits.max_pixels} pixels per frame"
        )


def _check_header_size(stream: VideoStream, limits: DecodeLimits) -> None:
    """Refuse a huge size before decoding anything (a header without a size is checked per frame)."""
    width, height = stream.codec_context.width, stream.codec_context.height
    if width and height:
        _check_size(width, height, limits)


def _rotation_quarters(frame: VideoFrame) -> int:
    try:
        return round(float(frame.rotation) / 90) % 4
    except (AttributeError, TypeError, ValueError):
        return 0


def _to_rgb(frame: VideoFrame) -> np.ndarray:
    arr: np.ndarray = frame.to_ndarray(format="rgb24")
    quarters = _rotation_quarters(frame)
    if quarters:
        arr = np.ascontiguousarray(np.rot90(arr, k=quarters))
    arr.flags.writeable = False
    return arr


def probe_video(path: Path, limits: DecodeLimits | None = None) -> VideoInfo:
    """Size, frame rate, duration and frame count, read from the packets (not the header)."""
    limits = limits or DecodeLimits()
    container, stream = _open(path)
    try:
        with container:
            _check_header_size(stream, limits)
            tb = stream.time_base or Fraction(1, 90_000)
            rate = stream.average_rate or stream.guessed_rate
            codec, pix_fmt = stream.codec_context.name, stream.codec_context.pix_fmt or ""
            frames = 0
            first: VideoFrame | None = None
            start: int | None = None
            end = 0
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                frames += 1
                if packet.pts is not None:
                    start = packet.pts if start is None else min(start, packet.pts)
                    end = max(end, packet.pts + (packet.duration or 0))
                if first is None:
                    first = next(iter(packet.decode()), None)
                if frames >= limits.max_source_frames:
                    break
            if first is None:
                first = next(iter(stream.codec_context.decode(None)), None)
    except _DECODE_ERRORS as exc:
        raise VideoDecodeError(f"cannot decode the video ({_describe(exc)})") from exc
    if frames == 0 or first is None:
        raise VideoDecodeError("the video has no decodable frames")
    _check_size(first.width, first.height, limits)
    duration = float((end - (start or 0)) * tb) if start is not None else 0.0
    if rate and (duration <= 0 or frames / duration > 2 * float(rate)):
        duration = frames / float(rate)  # packets without durations: trust the stream's rate
    fps = frames / duration if duration > 0 else float(rate or TARGET_FPS)
    width, height = first.width, first.height
    if _rotation_quarters(first) % 2:
        width, height = height, width
    return VideoInfo(
        fps=round(fps, 3),
        duration_s=round(duration, 3),
        width=width,
        height=height,
        frames=frames,
        codec=codec,
        pix_fmt=pix_fmt,
    )


def iter_frames_16fps(
    path: Path, max_frames: int | None = None, limits: DecodeLimits | None = None
) -> Iterator[np.ndarray]:
    """Yield read-only RGB frames (H, W, 3) uint8 at 16 fps, one source frame per time step.

    Stops after ``max_frames`` (or ``limits.max_frames``) output frames or
    ``limits.max_source_frames`` source frames. A repeated source frame is yielded as the
    same array object.
    """
    limits = limits or DecodeLimits()
    cap = min(max_frames, limits.max_frames) if max_frames is not None else limits.max_frames
    container, stream = _open(path)
    try:
        with container:
            _check_header_size(stream, limits)
            stream.thread_type = "AUTO"
            yield from _resample(container.decode(stream), stream, cap, limits)
    except _DECODE_ERRORS as exc:
        raise VideoDecodeError(f"cannot decode the video ({_describe(exc)})") from exc


def _resample(
    frames: Iterator[VideoFrame], stream: VideoStream, cap: int, limits: DecodeLimits
) -> Iterator[np.ndarray]:
    tb = stream.time_base or Fraction(1, 90_000)
    rate = stream.average_rate or stream.guessed_rate
    step = Fraction(1, TARGET_FPS)
    k = 0
    t0: Fraction | None = None
    prev: VideoFrame | None = None
    prev_t = Fraction(0)
    last_gap = Fraction(1, int(rate)) if rate and int(rate) > 0 else step
    cache: tuple[VideoFrame | None, np.ndarray | None] = (None, None)

    def rgb(frame: VideoFrame) -> np.ndarray:
        nonlocal cache
        if cache[0] is not frame or cache[1] is None:
            cache = (frame, _to_rgb(frame))
        assert cache[1] is not None
        return cache[1]

    for index, frame in enumerate(frames):
        if index >= limits.max_source_frames or k >= cap:
            return
        _check_size(frame.width, frame.height, limits)
        t_abs = Fraction(frame.pts) * tb if frame.pts is not None else index * last_gap
        if t0 is None:
            t0 = t_abs
        t = t_abs - t0
        if prev is None:
            prev, prev_t = frame, t
            continue
        if t <= prev_t:
            continue  # out-of-order or duplicate timestamp
        while k < cap and k * step < t:
            target = k * step
            yield rgb(prev if target - prev_t <= t - target else frame)
            k += 1
        last_gap = t - prev_t
        prev, prev_t = frame, t
    if prev is None:
        return
    last = Fraction(prev.duration) * tb if prev.duration else last_gap
    while k < cap and k * step < prev_t + last:
        yield rgb(prev)
        k += 1


def read_frames_16fps(
    path: Path, max_frames: int | None = None, limits: DecodeLimits | None = None
) -> np.ndarray:
    """All frames at 16 fps as one (F, H, W, 3) uint8 array (see :func:`iter_frames_16fps`)."""
    limits = limits or DecodeLimits()
    out: list[np.ndarray] = []
    size = 0
    for frame in iter_frames_16fps(path, max_frames=max_frames, limits=limits):
        size += frame.nbytes
        if size > limits.max_array_bytes:
            raise VideoDecodeError("the video is too long to hold in memory at once")
        if out and frame.shape != out[0].shape:
            raise VideoDecodeError("the frame size changes in the middle of the video")
        out.append(frame)
    if not out:
        raise VideoDecodeError("the video has no decodable frames")
    return np.stack(out)
