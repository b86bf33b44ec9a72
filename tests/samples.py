"""Small media made in code for tests."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def png_bytes(width: int = 160, height: int = 90, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()
