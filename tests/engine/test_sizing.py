from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from wanforge.engine.sizing import (
    MAX_ASPECT,
    PRESETS,
    cover_box,
    fit_image,
    generation_size,
    output_size,
    size_for_area,
)
from wanforge.media.images import normalize_image

STANDARD = [
    # (image w, h, resolution, expected output w, h)
    (1920, 1080, "480p", 832, 480),
    (1920, 1080, "720p", 1280, 720),
    (1920, 1080, "1080p", 1920, 1080),
    (1080, 1920, "480p", 480, 832),
    (1080, 1920, "720p", 720, 1280),
    (1080, 1920, "1080p", 1080, 1920),
    # an image already at the 480p preset size lands on the other presets too
    (832, 480, "480p", 832, 480),
    (832, 480, "1080p", 1920, 1080),
    (480, 832, "720p", 720, 1280),
    (1280, 720, "1080p", 1920, 1080),
    # a 16:9 image whose sides do not divide evenly still snaps
    (1366, 768, "720p", 1280, 720),
]


@pytest.mark.parametrize(("iw", "ih", "res", "w", "h"), STANDARD)
def test_standard_aspects_land_on_the_standard_sizes(iw: int, ih: int, res: str, w: int, h: int) -> None:
    assert output_size(iw, ih, res) == (w, h)


AREA_RULE = [
    (1000, 1000, "480p", 624, 624),
    (1000, 1000, "720p", 960, 960),
    (1000, 1000, "1080p", 1440, 1440),
    (1024, 768, "480p", 736, 544),
    (1024, 768, "720p", 1104, 832),
    (1024, 768, "1080p", 1664, 1248),
    (768, 1024, "720p", 832, 1104),
    (2560, 1080, "720p", 1472, 624),
    (1080, 2560, "480p", 416, 976),
    (1600, 1000, "480p", 800, 496),
    # extreme panoramas are clamped to 3:1
    (10000, 100, "720p", 1664, 560),
    (100, 10000, "720p", 560, 1664),
    (30000, 1, "1080p", 2496, 832),
]


@pytest.mark.parametrize(("iw", "ih", "res", "w", "h"), AREA_RULE)
def test_other_aspects_keep_the_preset_area(iw: int, ih: int, res: str, w: int, h: int) -> None:
    assert output_size(iw, ih, res) == (w, h)


@pytest.mark.parametrize("res", sorted(PRESETS))
@pytest.mark.parametrize(
    "aspect", [1.0, 4 / 3, 3 / 4, 3 / 2, 2 / 3, 16 / 10, 21 / 9, 9 / 21, 2.0, 0.5, 2.9, 1 / 2.9]
)
def test_area_rule_properties(res: str, aspect: float) -> None:
    iw, ih = round(1000 * aspect), 1000
    w, h = output_size(iw, ih, res)
    assert w % 16 == 0 and h % 16 == 0
    assert abs(math.log((w / h) / (iw / ih))) < 0.04
    assert abs(w * h / PRESETS[res].area - 1) < 0.06


def test_clamping_is_symmetric_and_bounded() -> None:
    for res in PRESETS:
        w, h = output_size(50_000, 10, res)
        assert (h, w) == output_size(10, 50_000, res)
        assert w / h <= MAX_ASPECT * 1.05


def test_generation_size_rounds_up_to_16() -> None:
    assert generation_size(1920, 1080, "1080p") == (1920, 1088)
    assert generation_size(1080, 1920, "1080p") == (1088, 1920)
    assert generation_size(1920, 1080, "720p") == (1280, 720)
    assert generation_size(1024, 768, "720p") == (1104, 832)


def test_generation_size_at_a_fixed_area() -> None:
    assert generation_size(1920, 1080, "1080p", area=64 * 112) == (112, 64)
    assert generation_size(1080, 1920, "480p", area=64 * 112) == (64, 112)
    assert generation_size(1000, 1000, "720p", area=64 * 112) == (80, 80)
    assert generation_size(10_000, 10, "720p", area=64 * 112) == (144, 48)


def test_size_for_area_never_returns_zero() -> None:
    assert size_for_area(3.0, 300) == (32, 16)


@pytest.mark.parametrize(("iw", "ih", "res"), [(0, 10, "720p"), (10, -1, "720p"), (10, 10, "4k")])
def test_bad_input_raises(iw: int, ih: int, res: str) -> None:
    with pytest.raises(ValueError):
        output_size(iw, ih, res)


def test_cover_box_crops_the_long_side_symmetrically() -> None:
    assert cover_box(200, 100, 64, 64) == (50.0, 0.0, 150.0, 100.0)
    assert cover_box(100, 200, 100, 100) == (0.0, 50.0, 100.0, 150.0)
    assert cover_box(1920, 1088, 1920, 1080) == (0.0, 4.0, 1920.0, 1084.0)


def test_fit_image_covers_and_center_crops() -> None:
    pixels = np.zeros((100, 200, 3), dtype=np.uint8)
    pixels[:, :50] = (255, 0, 0)
    pixels[:, 50:150] = (0, 255, 0)
    pixels[:, 150:] = (0, 0, 255)
    fitted = fit_image(Image.fromarray(pixels), 64, 64)
    assert fitted.size == (64, 64) and fitted.mode == "RGB"
    arr = np.asarray(fitted).astype(int)
    # the red and blue side bands are cropped away; only the green middle is left
    assert np.abs(arr[:, 2:-2] - (0, 255, 0)).max() <= 2
    assert arr[:, :, 1].mean() > 245


def test_fit_image_keeps_an_image_of_the_right_size() -> None:
    img = Image.fromarray(np.arange(64 * 112 * 3, dtype=np.uint8).reshape(64, 112, 3))
    assert np.array_equal(np.asarray(fit_image(img, 112, 64)), np.asarray(img))


def test_prepare_image_applies_exif_orientation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    Image.new("RGB", (40, 20), (10, 20, 30)).save(buf, format="JPEG", exif=exif)
    img = Image.open(io.BytesIO(buf.getvalue()))
    assert img.size == (40, 20)
    assert normalize_image(img).size == (20, 40)


def test_prepare_image_puts_transparency_on_white() -> None:
    img = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    out = normalize_image(img)
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255)
    assert normalize_image(Image.new("L", (4, 4), 7)).getpixel((0, 0)) == (7, 7, 7)
