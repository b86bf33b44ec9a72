"""Output and generation sizes from a resolution preset and the input image's aspect ratio.

The rule (see docs/engine.md):

1. The aspect ratio ``a = width / height`` of the input image is clamped to
   ``[1 / MAX_ASPECT, MAX_ASPECT]``; a more extreme panorama is center-cropped to that ratio.
2. If ``a`` is within ``SNAP_TOLERANCE`` (relative) of 16:9 or of the preset's own landscape
   ratio, the output is the preset's exact landscape size (832x480, 1280x720, 1920x1080);
   the same holds mirrored for portrait (9:16 gives 480x832, 720x1280, 1080x1920).
3. Otherwise the output keeps the preset's pixel area: ``h = sqrt(area / a)``, ``w = a * h``,
   each rounded to the nearest multiple of 16.

The model itself denoises at sides that are multiples of 16 (VAE stride 8 x patch 2), so the
generation size is the output size rounded *up* to 16 (1920x1080 is generated at 1920x1088
and center-cropped), or the area rule at a fixed small area for the demo model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

MULTIPLE = 16
MAX_ASPECT = 3.0
SNAP_TOLERANCE = 0.03
_WIDESCREEN = 16 / 9


@dataclass(frozen=True)
class SizePreset:
    """A resolution preset, described by its landscape size."""

    name: str
    width: int
    height: int

    @property
    def area(self) -> int:
        return self.width * self.height


PRESETS: dict[str, SizePreset] = {
    "480p": SizePreset("480p", 832, 480),
    "720p": SizePreset("720p", 1280, 720),
    "1080p": SizePreset("1080p", 1920, 1080),
}


def get_preset(resolution: str) -> SizePreset:
    try:
        return PRESETS[resolution]
    except KeyError:
        raise ValueError(f"unknown resolution {resolution!r}; expected one of {sorted(PRESETS)}") from None


def clamped_aspect(image_w: int, image_h: int) -> float:
    """``image_w / image_h`` clamped to ``[1 / MAX_ASPECT, MAX_ASPECT]``."""
    if image_w <= 0 or image_h <= 0:
        raise ValueError(f"image size must be positive, got {image_w}x{image_h}")
    return min(max(image_w / image_h, 1 / MAX_ASPECT), MAX_ASPECT)


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)


def _ceil_to(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def size_for_area(aspect: float, area: int, multiple: int = MULTIPLE) -> tuple[int, int]:
    """``(width, height)`` with about ``area`` pixels and ratio ``aspect``, sides multiples of ``multiple``."""
    height = math.sqrt(area / aspect)
    return _round_to(height * aspect, multiple), _round_to(height, multiple)


def _snaps_to(aspect: float, preset: SizePreset) -> bool:
    targets = (_WIDESCREEN, preset.width / preset.height)
    return any(abs(math.log(aspect / t)) <= SNAP_TOLERANCE for t in targets)


def output_size(image_w: int, image_h: int, resolution: str) -> tuple[int, int]:
    """The ``(width, height)`` of the delivered video for an input image of ``image_w x image_h``."""
    preset = get_preset(resolution)
    aspect = clamped_aspect(image_w, image_h)
    if _snaps_to(aspect, preset):
        return preset.width, preset.height
    if _snaps_to(1 / aspect, preset):
        return preset.height, preset.width
    return size_for_area(aspect, preset.area)


def generation_size(
    image_w: int, image_h: int, resolution: str, *, area: int | None = None
) -> tuple[int, int]:
    """The ``(width, height)`` the model denoises at; both sides are multiples of 16.

    Without ``area``: the output size of ``resolution`` rounded up to multiples of 16.
    With ``area``: the area rule at that pixel area (the demo model's small canvas).
    """
    if area is not None:
        return size_for_area(clamped_aspect(image_w, image_h), area)
    width, height = output_size(image_w, image_h, resolution)
    return _ceil_to(width, MULTIPLE), _ceil_to(height, MULTIPLE)


def cover_box(src_w: int, src_h: int, dst_w: int, dst_h: int) -> tuple[float, float, float, float]:
    """The centered source region with the destination's aspect ratio (resize to cover + center crop)."""
    scale = max(dst_w / src_w, dst_h / src_h)
    crop_w, crop_h = dst_w / scale, dst_h / scale
    left, top = (src_w - crop_w) / 2, (src_h - crop_h) / 2
    return left, top, left + crop_w, top + crop_h


def fit_image(
    img: Image.Image, width: int, height: int, resample: Image.Resampling = Image.Resampling.LANCZOS
) -> Image.Image:
    """Resize ``img`` to cover ``width x height`` and center-crop it, as RGB: the one
    resize-to-cover (the engine's input image with LANCZOS, the trainer's frames with BICUBIC)."""
    img = img.convert("RGB")
    if img.size == (width, height):
        return img
    box = cover_box(img.width, img.height, width, height)
    return img.resize((width, height), resample, box=box)
