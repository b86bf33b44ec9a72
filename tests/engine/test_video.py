from __future__ import annotations

import struct
from pathlib import Path

import av
import numpy as np
import pytest

from wanforge.engine.video import write_mp4
from wanforge.training.videos import probe_video


def top_level_atoms(path: Path) -> list[str]:
    data = path.read_bytes()
    atoms, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        atoms.append(kind.decode("latin-1"))
        if size == 0:
            break
        offset += size
    return atoms


def gradient_frames(count: int, width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    frames = np.empty((count, height, width, 3), dtype=np.uint8)
    for i in range(count):
        frames[i, ..., 0] = (x * 255 // max(width - 1, 1) + 3 * i) % 256
        frames[i, ..., 1] = y * 255 // max(height - 1, 1)
        frames[i, ..., 2] = 128
    return frames


def test_mp4_round_trip(tmp_path: Path) -> None:
    frames = gradient_frames(81, 112, 64)
    path = write_mp4(frames, tmp_path / "out.mp4", 16)
    info = probe_video(path)
    assert (info.width, info.height, info.frames, info.fps) == (112, 64, 81, 16.0)
    assert (info.codec, info.pix_fmt, info.duration_s) == ("h264", "yuv420p", 5.062)
    atoms = top_level_atoms(path)
    assert "moov" in atoms and "mdat" in atoms
    assert atoms.index("moov") < atoms.index("mdat")  # faststart


def test_colours_survive_encoding(tmp_path: Path) -> None:
    frames = gradient_frames(5, 160, 96)
    path = write_mp4(frames, tmp_path / "out.mp4", 16)
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 5
    assert np.abs(decoded[0].astype(int) - frames[0].astype(int)).mean() < 3.0


def test_1080p_encode(tmp_path: Path) -> None:
    frames = gradient_frames(9, 1920, 1080)
    info = probe_video(write_mp4(frames, tmp_path / "hd.mp4", 16))
    assert (info.width, info.height, info.frames) == (1920, 1080, 9)


@pytest.mark.parametrize(
    "frames",
    [
        np.zeros((3, 64, 112, 3), dtype=np.float32),
        np.zeros((3, 63, 112, 3), dtype=np.uint8),
        np.zeros((0, 64, 112, 3), dtype=np.uint8),
        np.zeros((64, 112, 3), dtype=np.uint8),
    ],
)
def test_bad_frames_raise(tmp_path: Path, frames: np.ndarray) -> None:
    with pytest.raises(ValueError):
        write_mp4(frames, tmp_path / "bad.mp4", 16)
