"""Decoding images into fixed-size RGB uint8 arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError

__all__ = ["load_image", "to_rgb"]


def to_rgb(img):  # PIL.Image -> PIL.Image
    """Convert any PIL mode to RGB; transparent pixels are composited on white."""
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: str | Path, size: int | None = None) -> np.ndarray:
    """Decode an image file to RGB, optionally resized to ``size`` x ``size``.

    Parameters
    ----------
    path : path
        Image file (any format Pillow reads; grayscale and RGBA are converted).
    size : int, optional
        Output side length; the image is resized (not cropped) with bicubic
        antialiasing. Default: keep the size.

    Returns
    -------
    ndarray of uint8, shape (size, size, 3) or (height, width, 3)
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = to_rgb(img)
            if size is not None and img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BICUBIC)
            return np.asarray(img, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: image not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"{path}: cannot decode image ({exc}); replace it with a valid image file"
        ) from None
