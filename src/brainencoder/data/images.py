"""Decoding images into fixed-size RGB uint8 arrays, faithfully or not at all.

Every mode Pillow opens becomes the RGB image a viewer would show, or is
refused by name: palettes are expanded, transparent pixels are composited on
white, EXIF orientation is applied, and values of more than 8 bits are scaled
by a stated rule, never by a guess from the image's own maximum:

- 16-bit modes (``I;16``, ...) are divided by 65535.
- Mode ``I`` (32-bit integers) holds 16-bit values, as Pillow opens 16-bit
  PGM/PPM files: 0..65535, divided by 65535. Negative values and values above
  65535 are refused, and so is an image whose values all lie within 1..255,
  which could as well be 8-bit: convert it to ``L`` (8-bit) or ``I;16``.
- Float images (mode ``F``, and float arrays and tensors given to predict:
  :func:`images_to_uint8`) hold values in [0, 1], as ``torchvision`` and most
  image libraries write them. Values within [-0.2, 1.2] are clipped to [0, 1]
  (resampling a [0, 1] image overshoots at sharp edges: bicubic by up to about
  0.11, Lanczos by up to about 0.15); values further out, NaN and inf are
  refused (:func:`float_to_uint8`), whatever their range: a 0-255 float image
  is refused, not guessed.

Large JPEGs are decoded at a reduced scale (``draft``) when a small size is
asked for, so memory does not grow with the source resolution; images above
Pillow's decompression-bomb limit are refused.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..util.errors import DataError

__all__ = [
    "FLOAT_TOLERANCE",
    "describe_mode",
    "float_to_uint8",
    "images_to_uint8",
    "load_image",
    "to_rgb",
]

_DIRECT = {"RGB", "L", "1", "P", "CMYK", "YCbCr", "RGBX", "HSV"}
_ALPHA = {"RGBA", "LA", "PA", "RGBa", "La"}
_HIGH_DEPTH = {"I;16", "I;16L", "I;16B", "I;16N", "I"}

FLOAT_TOLERANCE = 0.2
"""How far outside [0, 1] a float image's values may lie and still be clipped to it."""


def describe_mode(mode: str) -> str | None:
    """How a mode is converted (for ``validate``), or None when it is refused."""
    if mode == "RGB":
        return "RGB"
    if mode in _DIRECT:
        return f"{mode} converted to RGB"
    if mode in _ALPHA:
        return f"{mode} composited on white"
    if mode == "I":
        return "I (32-bit integers) read as 16-bit values and scaled to 8 bits"
    if mode in _HIGH_DEPTH:
        return f"{mode} scaled from its bit depth to 8 bits"
    if mode == "F":
        return "F (float) scaled from [0, 1] to 8 bits"
    return None


def float_to_uint8(values: np.ndarray, name: str | Path) -> np.ndarray:
    """Float pixel values in [0, 1] as uint8 in 0..255: the one rule for float images.

    Mode ``F`` files and images, float arrays and float tensors all go through
    it, so the same values give the same pixels (and predictions) in any form.

    Parameters
    ----------
    values : ndarray of floating point, any shape
        Values in [0, 1]; those within [-FLOAT_TOLERANCE, 1 + FLOAT_TOLERANCE]
        (resampling overshoot) are clipped to [0, 1].
    name : str or path
        The image, for the error message (a file, or ``image 3``).

    Returns
    -------
    ndarray of uint8, the shape of ``values``
        ``round(255 * clip(values, 0, 1))``, computed in float64.

    Raises
    ------
    DataError
        For NaN or inf, or values outside [-FLOAT_TOLERANCE, 1 + FLOAT_TOLERANCE]
        (a 0-255 float image among them), naming ``name``.
    """
    values = np.asarray(values)
    given = values.dtype if np.issubdtype(values.dtype, np.floating) else np.dtype(np.float64)
    bounds = np.array([-FLOAT_TOLERANCE, 1.0 + FLOAT_TOLERANCE], given)  # 1.2 as float32 is 1.2
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise DataError(
            f"{name}: float image holds NaN or inf; replace them and scale it to [0, 1], "
            "or give uint8 (0-255)"
        )
    if values.size:
        low, top = float(values.min()), float(values.max())
        if low < bounds[0] or top > bounds[1]:
            raise DataError(
                f"{name}: float image with values in [{low:.4g}, {top:.4g}]; float images "
                "must hold values in [0, 1]: scale it to [0, 1] or give uint8 (0-255)"
            )
    return np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)


def _int_scale(values: np.ndarray, mode: str, path: str | Path) -> np.ndarray:
    """A 16-bit or mode ``I`` image's values as 0..255 floats (see the module docstring)."""
    if not values.size:
        return values.astype(np.float64)
    low, top = int(values.min()), int(values.max())
    if low < 0:
        raise DataError(f"{path}: {mode} image with negative values; save it as 8-bit RGB")
    if mode == "I" and top > 65535:
        raise DataError(
            f"{path}: image mode I with values up to {top}, beyond 16 bits; "
            "save it as an 8-bit or 16-bit image"
        )
    if mode == "I" and 0 < top <= 255:
        raise DataError(
            f"{path}: image mode I with values in [{low}, {top}] may be 8-bit or 16-bit; "
            "convert it to mode L (8-bit) or I;16 (16-bit)"
        )
    return values.astype(np.float64) / 65535.0 * 255.0


def _scale_to_uint8(img: Any, path: str | Path) -> Any:  # PIL.Image -> PIL.Image ("L")
    from PIL import Image

    values = np.asarray(img)
    if img.mode == "F":
        return Image.fromarray(float_to_uint8(values, path), "L")
    out = _int_scale(values, img.mode, path)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "L")


def _tensor_type() -> type | None:
    """``torch.Tensor`` if torch is imported (no tensor exists otherwise), else None."""
    return getattr(sys.modules.get("torch"), "Tensor", None)


def _shape_error(name: str, tensor: bool, dtype: Any, shape: tuple, batch: bool) -> DataError:
    """The error for an image array or tensor of a shape other than (height, width, 3)."""
    what = "tensor" if tensor else "array"
    want = "(n, height, width, 3) or (height, width, 3)" if batch else "(height, width, 3)"
    hint = ""
    if len(shape) in (3, 4) and shape[-1] != 3 and shape[-3] == 3:
        axes = "0, 2, 3, 1" if len(shape) == 4 else "1, 2, 0"
        hint = f" (channels first? use {what}.{'permute' if tensor else 'transpose'}({axes}))"
    dtype = str(dtype).removeprefix("torch.")
    return DataError(
        f"{name}: image {what}s must be {want}, uint8 or float in [0, 1]; "
        f"got {dtype} {tuple(shape)}{hint}"
    )


def _one_image(image: Any, name: str, tensor: bool) -> np.ndarray:
    """One (height, width, 3) array or tensor as a numpy array, floats made uint8."""
    if tensor:
        image = image.detach().cpu()
        if image.is_floating_point() and image.element_size() < 4:
            image = image.float()  # float16 and bfloat16 hold no more; numpy lacks bfloat16
        image = image.numpy()
    if image.ndim != 3 or image.shape[-1] != 3:
        raise _shape_error(name, tensor, image.dtype, image.shape, batch=False)
    if np.issubdtype(image.dtype, np.floating):
        return float_to_uint8(image, name)
    return image


def images_to_uint8(images: Any) -> Any:
    """Torch tensors and float arrays among ``images`` as numpy arrays, floats made uint8.

    Tensors follow the conventions of numpy arrays: a batch (n, height, width,
    3) or one image (height, width, 3), channels last, on any device; float
    arrays and tensors hold values in [0, 1] (:func:`float_to_uint8`), so
    ``x``, ``x.numpy()`` and ``uint8 round(255 * x)`` give the same pixels.
    A list (or other iterable) may mix them with PIL images. Anything else
    (uint8 arrays, PIL images, paths, image sources) is returned as given, for
    :func:`~brainencoder.data.sources.as_image_source`.

    Parameters
    ----------
    images : Any
        What a user passed as images.

    Returns
    -------
    Any
        ``images``, with tensors and float arrays as numpy arrays (a batch:
        one uint8 array of shape (n, height, width, 3); a sequence: a list).

    Raises
    ------
    DataError
        For a float image outside [0, 1] or holding NaN (:func:`float_to_uint8`),
        or a tensor or float array of another shape (channels first, say),
        naming the image.
    """
    tensor = _tensor_type()

    def is_tensor(x: Any) -> bool:
        return tensor is not None and isinstance(x, tensor)

    def converts(x: Any) -> bool:
        return is_tensor(x) or (isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating))

    if converts(images):
        as_tensor, shape = is_tensor(images), tuple(images.shape)
        if len(shape) == 3:
            return _one_image(images, "image 0", as_tensor)
        if len(shape) != 4 or shape[-1] != 3:
            raise _shape_error("images", as_tensor, images.dtype, shape, batch=True)
        rows = [_one_image(row, f"image {i}", as_tensor) for i, row in enumerate(images)]
        return np.stack(rows) if rows else np.empty(shape, np.uint8)
    if isinstance(images, str | Path | bytes | np.ndarray) or hasattr(images, "load"):
        return images  # a path, a uint8 array, a PIL image or an image source
    try:
        items = list(images)
    except TypeError:
        return images
    return [
        _one_image(x, f"image {i}", is_tensor(x)) if converts(x) else x for i, x in enumerate(items)
    ]


def to_rgb(img: Any, path: str | Path = "image") -> Any:  # PIL.Image -> PIL.Image
    """Convert a PIL image of any supported mode to a faithful RGB image.

    Modes and their scaling are listed in the module docstring.

    Parameters
    ----------
    img : PIL.Image.Image
    path : str or path, default="image"
        The file or image named in errors.

    Returns
    -------
    PIL.Image.Image
        Mode RGB.

    Raises
    ------
    DataError
        For modes that have no faithful RGB rendering, and values outside a
        mode's stated range, naming the file.
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
