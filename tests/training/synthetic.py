"""Synthetic training clips and ZIPs for tests (no network, no real footage).

A clip is a white square moving left to right on black ("scene A"). Options: a static start
(the square waits at the left edge), a hard cut to "scene B" (a dark square moving right to
left on a blue background), any size, frame rate and length, and mp4 / mov / mkv / webm /
avi / gif containers. The square's position encodes the source frame index, which lets tests
check which source frame a decoded frame came from (:func:`square_x`).

Import as ``from tests.training.synthetic import make_clip, make_dataset_zip`` (the repository
root is on pytest's ``pythonpath``; ``tests`` is a namespace package).
"""

from __future__ import annotations

import io
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = [
    "make_clip",
    "make_dataset_zip",
    "make_overlap_bomb",
    "make_zip",
    "make_zip_with_infos",
    "patch_zip_headers",
    "square_x",
    "synthetic_frames",
    "write_video",
    "zip_bytes",
]

SCENE_B_BACKGROUND = (40, 90, 200)

_CODECS = {
    ".mp4": ("libx264", "yuv420p"),
    ".mov": ("libx264", "yuv420p"),
    ".mkv": ("libx264", "yuv420p"),
    ".webm": ("libvpx", "yuv420p"),
    ".avi": ("mpeg4", "yuv420p"),
    ".gif": ("gif", "rgb8"),
}


def synthetic_frames(
    frames: int,
    width: int = 64,
    height: int = 48,
    *,
    static_frames: int = 0,
    cut_at: int | None = None,
    speed: float | None = None,
) -> np.ndarray:
    """(frames, height, width, 3) uint8. The square (side height // 3) starts at x = 0 and moves
    ``speed`` px per frame (default: across the whole width over the moving frames)."""
    side = max(2, height // 3)
    moving = max(1, frames - static_frames)
    if speed is None:
        speed = (width - side) / moving
    out = np.zeros((frames, height, width, 3), dtype=np.uint8)
    top = (height - side) // 2
    for i in range(frames):
        x = round(max(0, i - static_frames) * speed)
        if cut_at is not None and i >= cut_at:
            out[i, :, :] = SCENE_B_BACKGROUND
            xb = max(0, width - side - round((i - cut_at) * speed))
            out[i, top : top + side, xb : xb + side] = (10, 10, 10)
        else:
            out[i, top : top + side, x : x + side] = 255
    return out


def write_video(path: Path, frames: np.ndarray, fps: int = 16) -> Path:
    """Encode (F, H, W, 3) uint8 frames; the codec follows the file suffix."""
    codec, pix_fmt = _CODECS[path.suffix.lower()]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        assert isinstance(stream, av.VideoStream)
        stream.width = int(frames.shape[2])
        stream.height = int(frames.shape[1])
        stream.pix_fmt = pix_fmt
        stream.codec_context.thread_count = 1
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "12"}
        elif codec in ("libvpx", "mpeg4"):
            stream.bit_rate = 4_000_000
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def make_clip(
    path: Path,
    *,
    fps: int = 16,
    frames: int = 33,
    width: int = 64,
    height: int = 48,
    static_frames: int = 0,
    cut_at: int | None = None,
    speed: float | None = None,
) -> Path:
    """Write a synthetic clip (see the module docstring) and return its path."""
    images = synthetic_frames(frames, width, height, static_frames=static_frames, cut_at=cut_at, speed=speed)
    return write_video(path, images, fps=fps)


def square_x(frame: np.ndarray) -> float:
    """The left edge of scene A's white square in a decoded frame (column of the bright mass)."""
    gray = frame.astype(np.float32).mean(axis=2)
    cols = (gray > 128).sum(axis=0)
    xs = np.nonzero(cols > cols.max() / 2)[0]
    return float(xs.min()) if xs.size else -1.0


def make_zip(
    path: Path,
    files: Mapping[str, bytes | str | Path],
    compression: int = zipfile.ZIP_DEFLATED,
) -> Path:
    """A ZIP of ``{name inside the ZIP: bytes, text or a file to copy}``."""
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, content in files.items():
            if isinstance(content, Path):
                data = content.read_bytes()
            elif isinstance(content, str):
                data = content.encode("utf-8")
            else:
                data = content
            zf.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data, compression)
    return path


def make_zip_with_infos(path: Path, entries: Sequence[tuple[zipfile.ZipInfo, bytes]]) -> Path:
    """A ZIP from hand-made ``ZipInfo`` headers (symlinks, encryption flags, odd names)."""
    with zipfile.ZipFile(path, "w") as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return path


def patch_zip_headers(path: Path, *, set_flags: int = 0, file_size: int | None = None) -> Path:
    """Rewrite every entry's headers in place: OR ``set_flags`` into the general purpose flags
    (``0x1`` marks an entry encrypted, which ``zipfile`` cannot write) and, if given, claim an
    uncompressed ``file_size`` that is not the real one."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        pos = zf.start_dir
        infos = zf.infolist()
    for info in infos:
        assert data[pos : pos + 4] == b"PK\x01\x02"
        local = info.header_offset
        assert data[local : local + 4] == b"PK\x03\x04"
        for flags_at in (pos + 8, local + 6):
            struct.pack_into("<H", data, flags_at, struct.unpack_from("<H", data, flags_at)[0] | set_flags)
        if file_size is not None:
            struct.pack_into("<I", data, pos + 24, file_size)
            struct.pack_into("<I", data, local + 22, file_size)
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, pos + 28)
        pos += 46 + name_len + extra_len + comment_len
    path.write_bytes(bytes(data))
    return path


def make_overlap_bomb(path: Path, names: Sequence[str], kernel_bytes: int) -> Path:
    """A small ZIP whose entries share their compressed data (David Fifield's "better zip bomb").

    One DEFLATE kernel of ``kernel_bytes`` zeros sits at the end of the file. Entry ``i``'s data
    is a stored (uncompressed) DEFLATE block that quotes entry ``i + 1``'s local header, followed
    by entry ``i + 1``'s data: every entry expands to the kernel plus the headers after it, and
    each local header's bytes lie inside the data of every entry before it. Every header is
    honest about sizes and CRCs, so per-entry checks pass.
    """
    kernel_plain = bytes(kernel_bytes)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    kernel = compressor.compress(kernel_plain) + compressor.flush()

    def local_header(name: bytes, crc: int, csize: int, usize: int) -> bytes:
        return (
            struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, csize, usize, len(name), 0)
            + name
        )

    encoded = [n.encode() for n in names]
    count = len(encoded)
    # build from the last entry back: each entry's data is known once the next one's is
    headers: list[bytes] = [b""] * count
    datas: list[bytes] = [b""] * count
    plains: list[bytes] = [b""] * count
    for i in reversed(range(count)):
        if i == count - 1:
            datas[i], plains[i] = kernel, kernel_plain
        else:
            quote = headers[i + 1]
            block = struct.pack("<BHH", 0, len(quote), len(quote) ^ 0xFFFF)
            datas[i] = block + quote + datas[i + 1]
            plains[i] = quote + plains[i + 1]
        crc = zlib.crc32(plains[i])
        headers[i] = local_header(encoded[i], crc, len(datas[i]), len(plains[i]))
    out = bytearray()
    offsets: list[int] = []
    for i in range(count):
        offsets.append(len(out))
        out += headers[i]
        if i < count - 1:
            out += struct.pack("<BHH", 0, len(headers[i + 1]), len(headers[i + 1]) ^ 0xFFFF)
    out += kernel
    central = bytearray()
    for i, name in enumerate(encoded):
        usize = len(plains[i])
        central += (
            struct.pack(
                "<4sHHHHHHIIIHHHHHII",
                b"PK\x01\x02",
                20,
                20,
                0,
                8,
                0,
                0x21,
                zlib.crc32(plains[i]),
                len(datas[i]),
                usize,
                len(name),
                0,
                0,
                0,
                0,
                0,
                offsets[i],
            )
            + name
        )
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, len(central), len(out), 0)
    path.write_bytes(bytes(out + central + end))
    return path


def make_dataset_zip(
    path: Path,
    clips: Mapping[str, str | None],
    *,
    fps: int = 16,
    frames: int = 33,
    width: int = 64,
    height: int = 48,
) -> Path:
    """A training ZIP: ``{"clips/a.mp4": "a caption" or None (no .txt)}``, one synthetic clip each."""
    files: dict[str, bytes | str | Path] = {}
    for name, caption in clips.items():
        buffer = _encode_to_bytes(Path(name).suffix, synthetic_frames(frames, width, height), fps)
        files[name] = buffer
        if caption is not None:
            files[str(Path(name).with_suffix(".txt"))] = caption
    return make_zip(path, files)


def _encode_to_bytes(suffix: str, frames: np.ndarray, fps: int) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / f"clip{suffix}"
        write_video(target, frames, fps=fps)
        return target.read_bytes()


def zip_bytes(files: Mapping[str, bytes]) -> bytes:
    """An in-memory ZIP (for tests that upload bytes)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


@dataclass
class Clip:
    """What the trainer consumes from a training sample: frames (F, H, W, 3) uint8 and a caption."""

    frames: np.ndarray
    caption: str
