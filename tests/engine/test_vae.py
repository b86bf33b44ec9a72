"""Tiled VAE decode (engine/vae.py): diffusers' AutoencoderKLWan tiling on the demo model's VAE."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from wanforge.engine.demo import build_vae
from wanforge.engine.generate import Engine, GenerationRequest, to_uint8
from wanforge.engine.loading import LoadedModel
from wanforge.engine.vae import AUTO_TILING_AREA, VaeTiles, check_tiling, vae_tiling, wants_tiling

ImageFactory = Callable[..., Image.Image]
# 32-pixel tiles every 24 pixels (4 and 3 latent pixels): the demo's 112x64 frames are 5 x 3 tiles
SMALL_TILES = VaeTiles(min_height=32, min_width=32, stride_height=24, stride_width=24)
# measured on the demo VAE (random weights) at the sizes below; asserted so a change shows up
# |tiled - plain| of one decode, in the VAE's [-1, 1] units (measured: max 0.315, mean 0.0116)
DECODE_BOUND_MAX, DECODE_BOUND_MEAN = 0.32, 0.012
# whole generation (2 steps, 9 frames, 112x64, seed 7), uint8 levels (measured: max 45, mean 2.548)
FRAMES_BOUND_MAX, FRAMES_BOUND_MEAN = 45, 2.6


@contextmanager
def counting(module: torch.nn.Module) -> Iterator[list[int]]:
    calls: list[int] = []
    handle = module.register_forward_hook(lambda *_: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()


def test_auto_tiles_above_the_720p_area_only() -> None:
    assert AUTO_TILING_AREA == 1280 * 720
    assert wants_tiling("auto", 1920, 1088) and wants_tiling("auto", 1088, 1920)  # native 1080p
    assert not wants_tiling("auto", 1280, 720) and not wants_tiling("auto", 832, 480)
    assert not wants_tiling("auto", 960, 960)  # 921,600 pixels: the 720p area exactly
    assert wants_tiling("on", 112, 64) and not wants_tiling("off", 1920, 1088)


def test_an_unknown_mode_names_the_setting() -> None:
    assert check_tiling("auto") == "auto"
    with pytest.raises(ValueError, match="WANFORGE_VAE_TILING must be one of"):
        check_tiling("sliced")
    with pytest.raises(ValueError, match="multiples of 8"):
        VaeTiles(min_height=30)
    with pytest.raises(ValueError, match="must not exceed"):
        VaeTiles(min_height=32, stride_height=40)


def test_tiled_decode_runs_in_tiles_and_stays_within_the_bound() -> None:
    torch.manual_seed(0)
    vae = build_vae()
    z = torch.randn(1, 16, 3, 8, 14)  # 3 latent frames of a 112x64 video
    with torch.no_grad(), counting(vae.decoder) as calls:
        with vae_tiling(vae, False):
            plain = vae.decode(z).sample
        untiled_calls = len(calls)
        with vae_tiling(vae, True, SMALL_TILES):
            tiled = vae.decode(z).sample
    assert untiled_calls == 3  # one decoder pass per latent frame
    assert len(calls) - untiled_calls == 3 * 5 * 3  # per frame: 3 rows x 5 columns of tiles
    assert plain.shape == tiled.shape == (1, 3, 9, 64, 112)
    diff = (plain - tiled).abs()
    assert 0 < diff.max().item() <= DECODE_BOUND_MAX and diff.mean().item() <= DECODE_BOUND_MEAN


def test_the_previous_tiling_state_comes_back() -> None:
    vae = build_vae()
    vae.enable_tiling(tile_sample_min_height=64, tile_sample_min_width=64)
    with vae_tiling(vae, True, SMALL_TILES):
        assert (vae.use_tiling, vae.tile_sample_min_height) == (True, 32)
    assert (vae.use_tiling, vae.tile_sample_min_height, vae.tile_sample_stride_height) == (True, 64, 192)
    with vae_tiling(vae, False):
        assert vae.use_tiling is False
    assert vae.use_tiling is True


def test_the_engine_decodes_in_tiles_when_asked(demo_loaded: LoadedModel, make_image: ImageFactory) -> None:
    profile = replace(demo_loaded.profile, steps=2, fps=8)
    loaded = replace(demo_loaded, profile=profile)
    req = GenerationRequest(make_image(112, 64, seed=5), "a cat", "", "720p", seed=7, duration_s=1)
    vae = demo_loaded.pipe.vae
    frames, calls = {}, {}
    for mode in ("off", "auto", "on"):
        engine = Engine(loaded, vae_tiling=mode, vae_tiles=SMALL_TILES)
        with counting(vae.decoder) as seen:
            raw, plan = engine.render(req)
        frames[mode], calls[mode] = to_uint8(raw), len(seen)
    # 9 frames = 3 latent frames at 112x64, far below the auto threshold
    assert (plan.gen_width, plan.gen_height) == (112, 64)
    assert calls == {"off": 3, "auto": 3, "on": 3 * 5 * 3}
    assert np.array_equal(frames["off"], frames["auto"])
    diff = np.abs(frames["off"].astype(np.int16) - frames["on"].astype(np.int16))
    assert 0 < diff.max() <= FRAMES_BOUND_MAX and diff.mean() <= FRAMES_BOUND_MEAN
    assert vae.use_tiling is False  # the shared pipeline is left as it was

    tiled = Engine(loaded, vae_tiling="on", vae_tiles=SMALL_TILES).generate(req)
    plain = Engine(loaded, vae_tiling="auto").generate(req)
    assert (tiled.vae_tiled, plain.vae_tiled) == (True, False)
