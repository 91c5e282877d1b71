"""Decoding images into fixed-size RGB uint8 arrays, faithfully or not at all.

Every mode Pillow opens becomes the RGB image a viewer would show, or is
refused by name: 16- and 32-bit integer images are scaled from their bit
depth, float images from [0, 1] (or [0, 255]), palettes are expanded,
transparent pixels are composited on white, and EXIF orientation is applied.
Large JPEGs are decoded at a reduced scale (``draft``) when a small size is
asked for, so memory does not grow with the source resolution; images above
Pillow's decompression-bomb limit are refused.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..util.errors import DataError

__all__ = ["describe_mode", "load_image", "to_rgb"]

_DIRECT = {"RGB", "L", "1", "P", "CMYK", "YCbCr", "RGBX", "HSV"}
_ALPHA = {"RGBA", "LA", "PA", "RGBa", "La"}
_HIGH_DEPTH = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def describe_mode(mode: str) -> str | None:
    """How a mode is converted (for ``validate``), or None when it is refused."""
    if mode == "RGB":
        return "RGB"
    if mode in _DIRECT:
        return f"{mode} converted to RGB"
    if mode in _ALPHA:
        return f"{mode} composited on white"
    if mode in _HIGH_DEPTH:
        return f"{mode} scaled from its bit depth to 8 bits"
    if mode == "F":
        return "F (float) scaled from [0, 1] (or [0, 255]) to 8 bits"
    return None


def _scale_to_uint8(img, path: str | Path):  # PIL.Image -> PIL.Image ("L")
    from PIL import Image

    values = np.asarray(img)
    if img.mode == "F":
        finite = values[np.isfinite(values)]
        if finite.size != values.size:
            raise DataError(f"{path}: float image holds NaN or inf; cannot convert it to RGB")
        top = float(finite.max()) if finite.size else 0.0
        low = float(finite.min()) if finite.size else 0.0
        if low < 0 or top > 255:
            raise DataError(
                f"{path}: float image with values in [{low:.3g}, {top:.3g}]; expected [0, 1] "
                "or [0, 255]: save it as an 8-bit RGB image"
            )
        scale = 255.0 if top <= 1.0 else 1.0
        out = values * scale
    else:
        top = int(values.max()) if values.size else 0
        if values.min() < 0:
            raise DataError(f"{path}: {img.mode} image with negative values; save it as 8-bit RGB")
        depth = 16 if img.mode.startswith("I;16") or top < 65536 else 32
        out = values.astype(np.float64) / ((1 << depth) - 1) * 255.0
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "L")


def to_rgb(img, path: str | Path = "image"):  # PIL.Image -> PIL.Image
    """Convert a PIL image of any supported mode to a faithful RGB image.

    Raises
    ------
    DataError
        For modes that have no faithful RGB rendering, naming the file.
    """
    from PIL import Image

    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _ALPHA or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in _DIRECT:
        return img.convert("RGB")
    if mode in _HIGH_DEPTH or mode == "F":
        return _scale_to_uint8(img, path).convert("RGB")
    raise DataError(
        f"{path}: image mode {mode} cannot be converted to RGB faithfully; save it as RGB"
    )


def load_image(path: str | Path, size: int | None = None) -> np.ndarray:
    """Decode an image file to RGB, optionally resized to ``size`` x ``size``.

    Parameters
    ----------
    path : path
        Image file (any format Pillow reads; see the module docstring for modes).
    size : int, optional
        Output side length; the image is resized (not cropped) with bicubic
        antialiasing. Default: keep the size.

    Returns
    -------
    ndarray of uint8, shape (size, size, 3) or (height, width, 3)
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if path.exists() and not path.is_file():
        raise DataError(f"{path}: not a regular file; move it out of the image folder")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if size is not None and img.format == "JPEG":
                    img.draft("RGB", (size, size))  # decode at a reduced scale: bounded memory
                img = ImageOps.exif_transpose(img)
                img = to_rgb(img, path)
                if size is not None and img.size != (size, size):
                    img = img.resize((size, size), Image.Resampling.BICUBIC)
                return np.asarray(img, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: image not found") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(
            f"{path}: image too large to decode safely ({exc}); downscale it first"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"{path}: cannot decode image ({exc}); replace it with a valid image file"
        ) from None
