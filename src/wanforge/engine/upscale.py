"""Per-frame video resizing to the delivered size: Pillow LANCZOS, resize to cover + center crop."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from wanforge.engine.sizing import cover_box


def _is_integer_crop(box: tuple[float, float, float, float]) -> bool:
    return all(float(v).is_integer() for v in box)


def upscale_frames(frames: np.ndarray, width: int, height: int, *, workers: int | None = None) -> np.ndarray:
    """Resize uint8 frames ``(F, h, w, 3)`` to ``(F, height, width, 3)``.

    The source is scaled to cover the target and center-cropped, so the aspect ratio is kept.
    A target no larger than the source on both sides after cropping at scale 1 is a pure crop
    (1920x1088 -> 1920x1080). Pillow releases the GIL while resampling, so frames are resized on
    a few threads.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames (F, H, W, 3), got {frames.dtype} {frames.shape}")
    count, src_h, src_w, _ = frames.shape
    if (src_w, src_h) == (width, height):
        return frames
    box = cover_box(src_w, src_h, width, height)
    left, top, right, bottom = box
    if right - left == width and bottom - top == height and _is_integer_crop(box):
        x, y = int(left), int(top)
        return np.ascontiguousarray(frames[:, y : y + height, x : x + width])

    out = np.empty((count, height, width, 3), dtype=np.uint8)

    def resize_one(index: int) -> None:
        img = Image.fromarray(frames[index])
        out[index] = np.asarray(img.resize((width, height), Image.Resampling.LANCZOS, box=box))

    n_workers = workers or min(8, os.cpu_count() or 1)
    if n_workers <= 1 or count <= 1:
        for index in range(count):
            resize_one(index)
    else:
        with ThreadPoolExecutor(max_workers=n_workers) as pool:
            list(pool.map(resize_one, range(count)))
    return out
