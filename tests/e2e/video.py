"""Decode an MP4 with PyAV for assertions."""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np


@dataclass
class Decoded:
    width: int
    height: int
    frames: int
    fps: float
    codec: str
    pix_fmt: str
    pixels: np.ndarray


def decode_mp4(data: bytes) -> Decoded:
    assert data[4:8] == b"ftyp", "not an MP4"
    # faststart: the moov atom comes before mdat
    assert data.find(b"moov") < data.find(b"mdat"), "moov is not before mdat (no faststart)"
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return Decoded(
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            frames=len(frames),
            fps=float(stream.average_rate or 0),
            codec=stream.codec_context.name,
            pix_fmt=stream.codec_context.pix_fmt or "",
            pixels=np.stack(frames),
        )
