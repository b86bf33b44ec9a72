"""decode_image: formats, colour modes, orientation, animation, limits and broken input."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import pytest
from PIL import Image

from wanforge.media.errors import MediaError
from wanforge.media.images import decode_image

LIMIT = 1_000_000
RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def encode(img: Image.Image, fmt: str, **options: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def halves(size: tuple[int, int] = (8, 4), mode: str = "RGB") -> Image.Image:
    """Left half red, right half blue."""
    img = Image.new(mode, size, RED)
    img.paste(BLUE, (size[0] // 2, 0, size[0], size[1]))
    return img


def decode(data: bytes, max_pixels: int = LIMIT) -> Image.Image:
    img = decode_image(data, max_pixels=max_pixels)
    assert img.mode == "RGB"
    return img


@pytest.mark.parametrize(("fmt", "options"), [("PNG", {}), ("WEBP", {"lossless": True}), ("BMP", {})])
def test_lossless_formats_decode_exactly(fmt: str, options: dict[str, Any]) -> None:
    img = decode(encode(halves(), fmt, **options))
    assert img.size == (8, 4)
    assert img.getpixel((0, 0)) == RED and img.getpixel((7, 3)) == BLUE


def test_jpeg_decodes_close_to_the_source() -> None:
    img = decode(encode(halves((32, 16)), "JPEG", quality=95))
    r, g, b = img.getpixel((2, 8))  # type: ignore[misc]
    assert r > 230 and g < 30 and b < 30


def test_rgba_is_composited_on_white() -> None:
    src = Image.new("RGBA", (4, 1), (255, 0, 0, 255))
    src.putpixel((1, 0), (255, 0, 0, 0))  # fully transparent
    src.putpixel((2, 0), (0, 0, 0, 128))  # half-transparent black
    img = decode(encode(src, "PNG"))
    assert img.getpixel((0, 0)) == RED
    assert img.getpixel((1, 0)) == WHITE
    assert img.getpixel((2, 0)) in ((127, 127, 127), (126, 126, 126))


def test_greyscale_with_alpha() -> None:
    src = Image.new("LA", (2, 1), (0, 255))
    src.putpixel((1, 0), (0, 0))
    img = decode(encode(src, "PNG"))
    assert img.getpixel((0, 0)) == (0, 0, 0) and img.getpixel((1, 0)) == WHITE


def test_palette_with_and_without_transparency() -> None:
    pal = halves().convert("P")
    assert decode(encode(pal, "PNG")).getpixel((0, 0)) == RED
    gif = Image.new("P", (2, 1), 0)
    gif.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    gif.putpixel((1, 0), 1)
    img = decode(encode(gif, "GIF", transparency=1))
    assert img.getpixel((0, 0)) == RED and img.getpixel((1, 0)) == WHITE


def test_sixteen_bit_greyscale_is_scaled_not_clipped() -> None:
    src = Image.new("I;16", (3, 1))
    for x, value in enumerate((0, 257 * 100, 65535)):
        src.putpixel((x, 0), value)
    img = decode(encode(src, "PNG"))
    assert [img.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (100, 100, 100), WHITE]


def test_32_bit_integer_and_float_greyscale() -> None:
    as_int = Image.new("I", (2, 1))
    as_int.putpixel((1, 0), 65535)
    img = decode(encode(as_int, "TIFF"))
    assert img.getpixel((0, 0)) == (0, 0, 0) and img.getpixel((1, 0)) == WHITE
    as_float = Image.new("F", (2, 1), 0.0)
    as_float.putpixel((1, 0), 1.0)
    img = decode(encode(as_float, "TIFF"))
    assert img.getpixel((1, 0)) == WHITE


def test_cmyk_jpeg() -> None:
    src = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    r, g, b = decode(encode(src, "JPEG", quality=95)).getpixel((8, 8))  # type: ignore[misc]
    assert r > 230 and g < 30 and b < 30


def test_bilevel() -> None:
    src = Image.new("1", (2, 1), 0)
    src.putpixel((1, 0), 1)
    img = decode(encode(src, "PNG"))
    assert img.getpixel((0, 0)) == (0, 0, 0) and img.getpixel((1, 0)) == WHITE


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_is_applied(fmt: str) -> None:
    src = halves((16, 8))
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: rotate 90° clockwise to display
    img = decode(encode(src, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {})))
    assert img.size == (8, 16)
    top, bottom = img.getpixel((4, 2)), img.getpixel((4, 13))
    assert top[0] > 200 and top[2] < 60  # type: ignore[index]  # the stored left (red) is on top
    assert bottom[2] > 200 and bottom[0] < 60  # type: ignore[index]


def test_animation_gives_the_first_frame() -> None:
    frames = [Image.new("RGB", (4, 4), RED), Image.new("RGB", (4, 4), BLUE)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert decode(data).getpixel((1, 1)) == RED
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    assert decode(data).getpixel((1, 1)) == RED


def test_pixel_limit() -> None:
    data = encode(Image.new("RGB", (100, 50)), "PNG")
    assert decode(data, max_pixels=5000).size == (100, 50)
    with pytest.raises(MediaError) as info:
        decode_image(data, max_pixels=4999, label="input 'image'")
    assert str(info.value) == (
        "input 'image' is 100x50 = 5000 pixels, over the limit of 4999 pixels; "
        "WANFORGE_MAX_IMAGE_PIXELS sets the limit"
    )


def test_a_sliver_is_refused_before_decoding() -> None:
    """A 1x40,000,000 PNG is within the pixel limit but is no picture to animate (and decodes to
    120 MB from a thousand bytes): sides more than 16 times apart are refused from the header."""
    assert decode(encode(Image.new("RGB", (160, 10)), "PNG"), max_pixels=10**6).size == (160, 10)
    for width, height in ((1, 40_000_000), (161, 10)):
        with pytest.raises(MediaError) as info:
            decode_image(png_claiming(width, height), max_pixels=40_000_000, label="input 'image'")
        assert str(info.value) == (
            f"input 'image' is {width}x{height}: its sides may differ at most 16 times (16:1)"
        )


def png_claiming(width: int, height: int) -> bytes:
    """A PNG declaring ``width`` x ``height`` whose pixel data stops after a few bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16))


def test_pixel_limit_is_checked_before_decoding() -> None:
    with pytest.raises(MediaError, match="10000x10000 = 100000000 pixels, over the limit"):
        decode(png_claiming(10_000, 10_000), max_pixels=40_000_000)
    # far beyond Pillow's own bomb threshold: refused however large our limit is
    with pytest.raises(MediaError, match="too many pixels"):
        decode(png_claiming(100_000, 100_000), max_pixels=10**12)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "it is empty"),
        (b"this is not an image at all", "not a known image format"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, ""),
        (png_claiming(4, 4), ""),  # a header and no pixel data
    ],
)
def test_unreadable(data: bytes, why: str) -> None:
    with pytest.raises(MediaError, match="^the image is not a readable image: " + why):
        decode(data)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated(fmt: str) -> None:
    noisy = Image.effect_noise((64, 64), 64).convert("RGB")
    data = encode(noisy, fmt)
    with pytest.raises(MediaError, match="is not a readable image"):
        decode(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("fmt", "options"), [("GIF", {}), ("TIFF", {}), ("TIFF", {"compression": "tiff_deflate"})]
)
def test_gif_and_tiff_are_allowed(fmt: str, options: dict[str, Any]) -> None:
    img = decode(encode(halves(), fmt, **options))
    assert img.size == (8, 4)
    assert img.getpixel((0, 0)) == RED and img.getpixel((7, 3)) == BLUE


ACCEPTED = "not a known image format (accepted: JPEG, PNG, WebP, BMP, GIF, TIFF)"


@pytest.mark.parametrize("fmt", ["PPM", "TGA", "PCX", "ICO", "SGI", "IM", "DDS", "QOI"])
def test_formats_outside_the_allow_list_are_refused(fmt: str) -> None:
    try:
        data = encode(halves((16, 16)), fmt)
    except (KeyError, OSError, ValueError):
        pytest.skip(f"this Pillow cannot write {fmt}")
    assert Image.open(io.BytesIO(data)).format == fmt  # Pillow itself would decode it
    with pytest.raises(MediaError) as info:
        decode(data)
    assert str(info.value) == f"the image is not a readable image: {ACCEPTED}"


def test_eps_never_reaches_ghostscript(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    def no_subprocess(*args: object, **kwargs: object) -> object:
        raise AssertionError("decoding an image started a process")

    for name in ("Popen", "run", "call", "check_call", "check_output"):
        monkeypatch.setattr(subprocess, name, no_subprocess)
    eps = (
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n%%EndComments\n"
        b"newpath 0 0 moveto 8 8 lineto stroke\nshowpage\n%%EOF\n"
    )
    with pytest.raises(MediaError) as info:
        decode(eps)
    assert str(info.value) == f"the image is not a readable image: {ACCEPTED}"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "TIFF"])
def test_truncated_is_refused_even_when_pillow_is_told_to_pad(
    fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    noisy = Image.effect_noise((64, 64), 64).convert("RGB")
    data = encode(noisy, fmt)
    with pytest.raises(MediaError) as info:
        decode(data[: len(data) * 3 // 4])
    assert str(info.value).startswith("the image is not a readable image: ")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # left as found


def test_png_cut_before_its_end_chunk_is_refused() -> None:
    data = encode(halves(), "PNG")
    assert data.endswith(b"IEND\xaeB`\x82")
    with pytest.raises(MediaError) as info:
        decode(data[:-12])
    assert str(info.value) == "the image is not a readable image: image file is truncated (no IEND chunk)"
