"""The learned upscaler (engine/upscale.py) on a real tiny super-resolution net shaped as spandrel's
ImageModelDescriptor: spandrel itself needs torchvision, which this CPU test environment lacks."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from wanforge.engine.generate import Engine, GenerationRequest, to_uint8
from wanforge.engine.loading import LoadedModel
from wanforge.engine.upscale import (
    TILE_OVERLAP,
    LearnedUpscaler,
    UpscalerError,
    load_upscaler,
    upscale_frames,
    upscaler_dtype,
)

ImageFactory = Callable[..., Image.Image]


def tiny_sr(seed: int = 0) -> torch.nn.Module:
    """A x2 super-resolution net: one 3x3 conv to 12 channels, then PixelShuffle(2)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3, padding=1), torch.nn.PixelShuffle(2))


@dataclass
class Descriptor:
    """What spandrel's ImageModelDescriptor offers: the module, its facts, and a call that runs it
    on (B, C, H, W) in [0, 1] and clamps the output to [0, 1]."""

    model: torch.nn.Module
    scale: int = 2
    purpose: str = "SR"
    input_channels: int = 3
    output_channels: int = 3
    supports_half: bool = True
    supports_bfloat16: bool = True
    calls: int = 0

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        with torch.inference_mode():
            return self.model(image).clamp_(0, 1)


def frames(count: int = 5, height: int = 16, width: int = 24, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((count, height, width, 3), dtype=np.float32)


def reference(net: torch.nn.Module, video: np.ndarray, width: int, height: int) -> np.ndarray:
    """Each frame alone through the net, rounded to uint8, then Lanczos to the exact size."""
    with torch.inference_mode():
        x = torch.from_numpy(video).permute(0, 3, 1, 2)
        big = torch.cat([net(x[i : i + 1]).clamp(0, 1) for i in range(len(x))])
    return upscale_frames(to_uint8(big.permute(0, 2, 3, 1).numpy()), width, height)


def test_frames_go_through_the_model_in_batches_then_to_the_exact_size() -> None:
    video = frames()
    sr = Descriptor(tiny_sr())
    out = LearnedUpscaler(sr, torch.device("cpu"), batch=2).upscale(video, 40, 30)
    assert out.shape == (5, 30, 40, 3) and out.dtype == np.uint8
    assert sr.calls == 3  # 2 + 2 + 1 frames
    assert np.array_equal(out, reference(sr.model, video, 40, 30))


def test_tiles_are_exact_for_a_net_that_sees_no_further_than_the_overlap() -> None:
    video = frames(count=2, height=20, width=44)
    whole = LearnedUpscaler(Descriptor(tiny_sr()), torch.device("cpu")).upscale(video, 88, 40)
    tiled_sr = Descriptor(tiny_sr())
    tiled = LearnedUpscaler(tiled_sr, torch.device("cpu"), tile=8).upscale(video, 88, 40)
    assert tiled_sr.calls == 2 * 3 * 6  # per frame: 3 rows x 6 columns of 8-pixel tiles
    assert TILE_OVERLAP >= 1  # the 3x3 conv reaches 1 pixel: each tile's core is exact
    assert np.array_equal(tiled, whole)


def test_a_model_that_tiles_internally_gets_whole_frames() -> None:
    @dataclass
    class Internal(Descriptor):
        tiling: Any = None

    sr = Internal(tiny_sr(), tiling=type("ModelTiling", (), {"name": "INTERNAL"})())
    LearnedUpscaler(sr, torch.device("cpu"), tile=8).upscale(frames(count=1, height=20, width=44), 88, 40)
    assert sr.calls == 1


def test_dtype_follows_the_device_and_what_the_model_supports() -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    net = tiny_sr()
    assert upscaler_dtype(Descriptor(net), cpu) == torch.float32
    assert upscaler_dtype(Descriptor(net), cuda) == torch.float16
    assert upscaler_dtype(Descriptor(net, supports_half=False), cuda) == torch.bfloat16
    no_half = Descriptor(net, supports_half=False, supports_bfloat16=False)
    assert upscaler_dtype(no_half, cuda) == torch.float32
    up = LearnedUpscaler(Descriptor(net), cpu)
    assert up.dtype == torch.float32 and next(net.parameters()).dtype == torch.float32


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"purpose": "Restoration", "scale": 1}, "WANFORGE_UPSCALER is not an image super-resolution model"),
        ({"purpose": "Inpainting"}, "WANFORGE_UPSCALER is not an image super-resolution model"),
        ({"scale": 1}, "WANFORGE_UPSCALER must upscale"),
        ({"input_channels": 1, "output_channels": 1}, "WANFORGE_UPSCALER must take and give RGB images"),
    ],
)
def test_what_is_not_an_rgb_sr_model_is_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(UpscalerError, match=message):
        LearnedUpscaler(Descriptor(tiny_sr(), **changes), torch.device("cpu"))


def test_a_missing_or_wrong_file_names_the_setting_not_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "secret-dir" / "4x.pth"
    with pytest.raises(UpscalerError, match="WANFORGE_UPSCALER names no readable file") as err:
        load_upscaler(missing)
    assert "secret-dir" not in str(err.value)
    wrong = tmp_path / "model.onnx"
    wrong.write_bytes(b"x")
    with pytest.raises(UpscalerError, match=r"WANFORGE_UPSCALER must name a \.pth/\.pt/\.ckpt/\.safetensors"):
        load_upscaler(wrong)


def test_without_spandrel_the_start_up_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "secret-dir" / "4x.safetensors"
    model.parent.mkdir()
    model.write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "spandrel", None)  # import spandrel -> ImportError
    with pytest.raises(
        UpscalerError, match="WANFORGE_UPSCALER is set but spandrel cannot be imported"
    ) as err:
        load_upscaler(model)
    assert "wanforge[upscale]" in str(err.value) and "torchvision" in str(err.value)
    assert "secret-dir" not in str(err.value)


def test_the_engine_uses_it_for_1080p_only(demo_loaded: LoadedModel, make_image: ImageFactory) -> None:
    profile = replace(demo_loaded.profile, steps=2, fps=8)
    loaded = replace(demo_loaded, profile=profile)
    sr = Descriptor(tiny_sr())
    engine = Engine(loaded, upscaler=LearnedUpscaler(sr, loaded.device, batch=4))
    req = GenerationRequest(make_image(112, 64, seed=5), "a cat", "", "1080p", seed=7, duration_s=1)

    result = engine.generate(req)
    raw, plan = engine.render(req)
    assert (result.upscaler, sr.calls) == ("learned", 3)  # 9 frames, 4 a call
    assert result.frames.shape == (9, 1080, 1920, 3)
    assert np.array_equal(result.frames, reference(sr.model, raw, plan.width, plan.height))
    assert result.timings["upscale_s"] > 0

    at_720p = engine.generate(replace(req, resolution="720p"))
    assert (at_720p.upscaler, sr.calls) == ("lanczos", 3)
    plain = Engine(loaded).generate(req)
    assert plain.upscaler == "lanczos" and not np.array_equal(plain.frames, result.frames)


def test_native_1080p_only_crops(demo_loaded: LoadedModel) -> None:
    """Denoised at 1920x1088, 1080p needs no upscaling: the learned model is not run."""
    from wanforge.engine.generate import GenerationPlan

    engine = Engine(demo_loaded, upscaler=LearnedUpscaler(Descriptor(tiny_sr()), demo_loaded.device))
    native = GenerationPlan(1920, 1088, 1920, 1080, 81, 40, 5.0, 3.5, 3.5, "", 512)
    from_720p = replace(native, gen_width=1280, gen_height=720)
    assert not engine.uses_learned_upscaler("1080p", native)
    assert engine.uses_learned_upscaler("1080p", from_720p)
    assert not engine.uses_learned_upscaler("720p", from_720p)
    assert not Engine(demo_loaded).uses_learned_upscaler("1080p", from_720p)
