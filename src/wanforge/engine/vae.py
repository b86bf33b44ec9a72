"""Tiled VAE decode for large generation sizes: diffusers' own ``AutoencoderKLWan`` tiling.

``WANFORGE_VAE_TILING`` picks it per worker: ``"on"``, ``"off"``, or ``"auto"``, which tiles only
when the pipeline decodes more pixels per frame than :data:`AUTO_TILING_AREA` (the 720p area).
Wan 2.2 A14B is trained and decoded at 480p and 720p; native 1080p (1920x1088, 2,088,960 pixels)
decodes 2.27x the pixels, and the untiled decoder's activations grow with them (simulated, float32,
81 frames: 7.6 GiB at 480p, 17.5 GiB at 720p, 39.8 GiB at native 1080p; tiled 3.9 and 8.9 GiB:
docs/engine.md). 1080p made at 720p and upscaled (the default strategy) decodes at 720p, untiled,
unless the worker's memory plan (engine/plan.py) finds that the untiled 720p decode does not fit
beside the resident weights: the worker then runs with ``on``.

diffusers' flag is read by both ``encode`` and ``decode``, so while it is on the image condition
is encoded in tiles too (untiled, that encode of the full-size video needs less than the decode:
simulated 5.3 GiB at 480p, 12.1 GiB at 720p).
Slicing (``enable_slicing``) splits the *batch*; a request here is one video (batch 1), so it
would do nothing, and the Wan VAE already decodes one latent frame at a time with its causal
cache, so there is no temporal slicing to add.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from diffusers.models.autoencoders.autoencoder_kl_wan import AutoencoderKLWan

VaeTiling = Literal["auto", "on", "off"]
VAE_TILING_MODES: tuple[VaeTiling, ...] = ("auto", "on", "off")
# "auto" tiles above the 720p pixel area (1280x720): see the module docstring
AUTO_TILING_AREA = 1280 * 720


@dataclass(frozen=True)
class VaeTiles:
    """Tile size and stride in output pixels (the defaults are diffusers' own: 256-pixel tiles
    every 192 pixels, so neighbours overlap and are blended over 64 pixels). Sizes must be
    multiples of the VAE's spatial factor (8)."""

    min_height: int = 256
    min_width: int = 256
    stride_height: int = 192
    stride_width: int = 192

    def __post_init__(self) -> None:
        sizes = (self.min_height, self.min_width, self.stride_height, self.stride_width)
        if any(s < 8 or s % 8 for s in sizes):
            raise ValueError(f"VAE tile sizes must be positive multiples of 8, got {sizes}")
        if self.stride_height > self.min_height or self.stride_width > self.min_width:
            raise ValueError("a VAE tile stride must not exceed the tile size (tiles must touch or overlap)")


def check_tiling(mode: str) -> VaeTiling:
    for known in VAE_TILING_MODES:
        if mode == known:
            return known
    raise ValueError(f"WANFORGE_VAE_TILING must be one of {list(VAE_TILING_MODES)}, got {mode!r}")


def wants_tiling(mode: VaeTiling, width: int, height: int) -> bool:
    """Whether a decode of ``width x height`` frames runs tiled under ``mode``."""
    if mode == "auto":
        return width * height > AUTO_TILING_AREA
    return mode == "on"


@contextmanager
def vae_tiling(vae: AutoencoderKLWan, enabled: bool, tiles: VaeTiles | None = None) -> Iterator[None]:
    """Run with the VAE's tiling set to ``enabled`` (with ``tiles``), then put back what it was."""
    previous = (
        vae.use_tiling,
        vae.tile_sample_min_height,
        vae.tile_sample_min_width,
        vae.tile_sample_stride_height,
        vae.tile_sample_stride_width,
    )
    if enabled:
        t = tiles or VaeTiles()
        vae.enable_tiling(
            tile_sample_min_height=t.min_height,
            tile_sample_min_width=t.min_width,
            tile_sample_stride_height=t.stride_height,
            tile_sample_stride_width=t.stride_width,
        )
    else:
        vae.disable_tiling()
    try:
        yield
    finally:
        (
            vae.use_tiling,
            vae.tile_sample_min_height,
            vae.tile_sample_min_width,
            vae.tile_sample_stride_height,
            vae.tile_sample_stride_width,
        ) = previous
