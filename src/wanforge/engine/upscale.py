"""Per-frame video resizing to the delivered size: Pillow LANCZOS, resize to cover + center crop;
and the optional learned (super-resolution) upscaler of the 1080p tier, run before it."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
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


# --- The learned upscaler of the 1080p tier (WANFORGE_UPSCALER; docs/engine.md) -------------------

UPSCALER_SETTING = "WANFORGE_UPSCALER"
# the files spandrel reads (it refuses pickles it cannot parse safely as state dicts)
MODEL_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")
# input pixels shared by neighbouring tiles, cut away from each tile's output (WANFORGE_UPSCALER_TILE)
TILE_OVERLAP = 16


class UpscalerError(Exception):
    """The configured upscaler cannot be used; the message names the setting, never the path."""


class SRDescriptor(Protocol):
    """What wanforge uses of a spandrel ``ImageModelDescriptor``."""

    @property
    def model(self) -> torch.nn.Module: ...
    @property
    def scale(self) -> int: ...
    @property
    def purpose(self) -> str: ...
    @property
    def input_channels(self) -> int: ...
    @property
    def output_channels(self) -> int: ...
    @property
    def supports_half(self) -> bool: ...
    @property
    def supports_bfloat16(self) -> bool: ...

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, 3, h, w)`` in ``[0, 1]`` (the model's dtype and device) to ``(B, 3, h*s, w*s)``."""
        ...


def check_descriptor(descriptor: SRDescriptor) -> SRDescriptor:
    """Refuse what is not an RGB super-resolution model (a restoration, face or inpainting model)."""
    purpose = getattr(descriptor, "purpose", None)
    if purpose != "SR":
        raise UpscalerError(
            f"{UPSCALER_SETTING} is not an image super-resolution model (spandrel reads it as {purpose!r})"
        )
    if descriptor.scale < 2:
        raise UpscalerError(
            f"{UPSCALER_SETTING} must upscale (scale 2 or more), its model has scale {descriptor.scale}"
        )
    if (descriptor.input_channels, descriptor.output_channels) != (3, 3):
        raise UpscalerError(
            f"{UPSCALER_SETTING} must take and give RGB images, its model has "
            f"{descriptor.input_channels} -> {descriptor.output_channels} channels"
        )
    return descriptor


def load_upscaler(path: Path) -> SRDescriptor:
    """Read the super-resolution model at ``path`` with spandrel (the ``upscale`` extra)."""
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise UpscalerError(f"{UPSCALER_SETTING} must name a {'/'.join(MODEL_SUFFIXES)} file")
    if not path.is_file():
        raise UpscalerError(f"{UPSCALER_SETTING} names no readable file")
    try:
        from spandrel import ModelLoader  # optional: the 'upscale' extra (it imports torchvision)
    except Exception as exc:  # not installed, or a torchvision that does not match torch
        raise UpscalerError(
            f"{UPSCALER_SETTING} is set but spandrel cannot be imported ({type(exc).__name__}): install "
            "the 'upscale' extra (pip install 'wanforge[upscale]') with a torchvision built for this torch"
        ) from exc
    try:
        descriptor = ModelLoader().load_from_file(path)
    except Exception as exc:  # an unknown architecture or a corrupt file: many error types
        raise UpscalerError(
            f"{UPSCALER_SETTING} is not a model spandrel can load ({type(exc).__name__})"
        ) from exc
    return check_descriptor(descriptor)


def upscaler_dtype(descriptor: SRDescriptor, device: torch.device) -> torch.dtype:
    """float16 on a GPU where the model supports it (as Real-ESRGAN runs), else bfloat16, else float32."""
    if device.type != "cuda":
        return torch.float32
    if descriptor.supports_half:
        return torch.float16
    return torch.bfloat16 if descriptor.supports_bfloat16 else torch.float32


class LearnedUpscaler:
    """A super-resolution model run over video frames, then resized to the exact output size.

    Frames go through the model ``batch`` at a time (spandrel documents one image per call, so 1
    by default); with ``tile`` > 0, a frame larger than ``tile`` input pixels a side is cut into
    tiles that overlap by :data:`TILE_OVERLAP` pixels, each tile's output keeping only its own
    core (exact for a network whose receptive field reaches no further than the overlap; close,
    not exact, for deep ones). The model's output (``scale`` x the input) is then resized with
    :func:`upscale_frames` (Pillow LANCZOS, cover + center crop) to the requested size.
    """

    def __init__(
        self, descriptor: SRDescriptor, device: torch.device, *, tile: int = 0, batch: int = 1
    ) -> None:
        if tile < 0 or batch < 1:
            raise ValueError(f"tile must be >= 0 and batch >= 1, got tile={tile}, batch={batch}")
        self.descriptor = check_descriptor(descriptor)
        self.device = device
        self.dtype = upscaler_dtype(descriptor, device)
        # a model that tiles internally (spandrel's ModelTiling.INTERNAL) is given whole frames
        internal = getattr(getattr(descriptor, "tiling", None), "name", "") == "INTERNAL"
        self.tile = 0 if internal else tile
        self.batch = batch
        descriptor.model.to(device=device, dtype=self.dtype).eval()

    @property
    def scale(self) -> int:
        return self.descriptor.scale

    def run(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, h, w)`` on the model's device and dtype to ``(B, 3, h*scale, w*scale)``."""
        _, _, height, width = images.shape
        tile = self.tile
        if tile == 0 or (height <= tile and width <= tile):
            return self.descriptor(images)
        # Tiles by hand: spandrel leaves tiling to its callers (chaiNNer does its own).
        s = self.scale
        out = images.new_empty((images.shape[0], self.descriptor.output_channels, height * s, width * s))
        for top in range(0, height, tile):
            for left in range(0, width, tile):
                bottom, right = min(top + tile, height), min(left + tile, width)
                y0, x0 = max(top - TILE_OVERLAP, 0), max(left - TILE_OVERLAP, 0)
                y1, x1 = min(bottom + TILE_OVERLAP, height), min(right + TILE_OVERLAP, width)
                part = self.descriptor(images[:, :, y0:y1, x0:x1])
                out[:, :, top * s : bottom * s, left * s : right * s] = part[
                    :, :, (top - y0) * s : (bottom - y0) * s, (left - x0) * s : (right - x0) * s
                ]
        return out

    def upscale(self, frames: np.ndarray, width: int, height: int) -> np.ndarray:
        """Float frames ``(F, h, w, 3)`` in ``[0, 1]`` to uint8 ``(F, height, width, 3)``."""
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected frames (F, H, W, 3), got {frames.shape}")
        out = np.empty((frames.shape[0], height, width, 3), dtype=np.uint8)
        with torch.inference_mode():
            for start in range(0, frames.shape[0], self.batch):
                chunk = torch.from_numpy(np.ascontiguousarray(frames[start : start + self.batch]))
                images = chunk.permute(0, 3, 1, 2).to(device=self.device, dtype=self.dtype)
                big = self.run(images).float().clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)
                big_frames = big.permute(0, 2, 3, 1).contiguous().cpu().numpy()
                out[start : start + big_frames.shape[0]] = upscale_frames(big_frames, width, height)
        return out
