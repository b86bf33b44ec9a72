"""Decoding user images safely into plain 8-bit RGB.

The input image of an I2V request can be anything a client sends. :func:`decode_image` reads
the header first and refuses an image with too many pixels before any pixel data is decoded
(decompression bombs), then loads it completely so truncated files fail here rather than later
in the pipeline, applies the EXIF orientation, takes the first frame of an animation and
converts every colour mode to RGB (transparency is composited on white, 16-bit and float
greyscale are scaled to 8 bits).

Only an allow-list of formats is decoded: JPEG, PNG, WebP, BMP, GIF (first frame) and TIFF.
Their Pillow plugins are imported here and ``Image.open`` gets ``formats=``, so no other plugin
is ever tried on user bytes: not EPS (which runs Ghostscript), nor any of the exotic formats
Pillow can parse. A truncated file is refused, never padded: the load runs with Pillow's
``ImageFile.LOAD_TRUNCATED_IMAGES`` off whatever its global value, and a PNG must reach its
``IEND`` chunk (Pillow stops quietly without one).

Pillow's global ``Image.MAX_IMAGE_PIXELS`` is left alone (no import-time side effects); its
own bomb error still applies above twice that value and is reported as a MediaError.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import (
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageFile,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    UnidentifiedImageError,
    WebPImagePlugin,
)

from wanforge.media.errors import MediaError

__all__ = ["ALLOWED_FORMATS", "decode_image"]

# Pillow format id -> the name shown to users; importing the plugins above registers exactly
# these, so Image.open never has to load the rest (Image.init())
ALLOWED_FORMATS: dict[str, str] = {
    JpegImagePlugin.JpegImageFile.format: "JPEG",
    PngImagePlugin.PngImageFile.format: "PNG",
    WebPImagePlugin.WebPImageFile.format: "WebP",
    BmpImagePlugin.BmpImageFile.format: "BMP",
    GifImagePlugin.GifImageFile.format: "GIF",
    TiffImagePlugin.TiffImageFile.format: "TIFF",
}
_NOT_ALLOWED = f"not a known image format (accepted: {', '.join(ALLOWED_FORMATS.values())})"
_PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk's type and CRC
_strict_lock = threading.Lock()

MAX_PIXELS_SETTING = "WANFORGE_MAX_IMAGE_PIXELS"
# the longer side at most this many times the shorter: a video is made at the image's aspect ratio
MAX_ASPECT = 16
BACKGROUND = (255, 255, 255)

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_HIGH_DEPTH_MODES = frozenset({"I", "F"})


def decode_image(data: bytes, *, max_pixels: int, label: str = "the image") -> Image.Image:
    """Decode ``data`` into an RGB image no larger than ``max_pixels`` pixels.

    ``label`` names the image in error messages (e.g. ``"input 'image'"``). Raises
    :class:`MediaError` for anything that is not a complete, readable image or is too large.
    """
    if not data:
        raise MediaError(f"{label} is not a readable image: it is empty")
    try:
        with warnings.catch_warnings():
            # our own pixel limit is checked below, before decoding; Pillow's warning is noise
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS)) as img:
                _check_pixels(img, max_pixels, label)
                if img.format == PngImagePlugin.PngImageFile.format and _PNG_END not in data:
                    raise MediaError(
                        f"{label} is not a readable image: image file is truncated (no IEND chunk)"
                    )
                if getattr(img, "is_animated", False):
                    img.seek(0)
                with _strict_loading():
                    img.load()
                return normalize_image(img)
    except MediaError:
        raise
    except Image.DecompressionBombError as exc:
        raise MediaError(f"{label} has too many pixels to decode safely: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise MediaError(f"{label} is not a readable image: {_NOT_ALLOWED}") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        # Pillow reports corrupt and truncated files with any of these
        raise MediaError(f"{label} is not a readable image: {exc}") from exc


@contextmanager
def _strict_loading() -> Iterator[None]:
    """Pillow's truncated-image padding off while we load, restored after.

    ``LOAD_TRUNCATED_IMAGES`` is a module global that Pillow reads inside ``load()``; nothing
    in wanforge turns it on, but any library in the process could, and then a truncated image
    would come back padded with grey. The lock keeps two decodes from restoring it out of order.
    """
    with _strict_lock:
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _check_pixels(img: Image.Image, max_pixels: int, label: str) -> None:
    width, height = img.size
    if width <= 0 or height <= 0:
        raise MediaError(f"{label} is not a readable image: it has size {width}x{height}")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise MediaError(
            f"{label} is {width}x{height}: its sides may differ at most {MAX_ASPECT} times ({MAX_ASPECT}:1)"
        )
    if width * height > max_pixels:
        raise MediaError(
            f"{label} is {width}x{height} = {width * height} pixels, over the limit of "
            f"{max_pixels} pixels; {MAX_PIXELS_SETTING} sets the limit"
        )


def normalize_image(img: Image.Image) -> Image.Image:
    """``img`` upright (its EXIF orientation applied) and in RGB, transparency put on white:
    what every image that reaches the model looks like, however it arrived."""
    return _to_rgb(_oriented(img))


def _oriented(img: Image.Image) -> Image.Image:
    """A new image with the EXIF orientation applied (a damaged EXIF block is ignored)."""
    try:
        rotated = ImageOps.exif_transpose(img)
    except Exception:  # Pillow raises many types on malformed EXIF; the pixels are still fine
        return img.copy()
    return img.copy() if rotated is None else rotated


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    if mode.startswith("I;16"):
        return img.convert("I").point(lambda v: v / 257).convert("L").convert("RGB")
    if mode in _HIGH_DEPTH_MODES:
        return _scaled_to_8bit(img).convert("RGB")
    return img.convert("RGB")  # 1, L, P, CMYK, YCbCr, LAB, HSV


def _scaled_to_8bit(img: Image.Image) -> Image.Image:
    """32-bit integer or float greyscale to L, assuming 0..1 floats or 0..65535 integers."""
    high = img.getextrema()[1]
    if not isinstance(high, int | float):
        return img.convert("L")
    if img.mode == "F" and high <= 1.0:
        scale = 255.0
    elif high <= 255:
        scale = 1.0
    elif high <= 65535:
        scale = 1 / 257
    else:
        scale = 255.0 / high
    return img.point(lambda v: v * scale).convert("L")
