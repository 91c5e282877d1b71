"""Where images to predict come from: a folder of image files, or one array file.

:class:`ImageFiles` is a folder's image files, decoded one by one
(:func:`~brainencoder.data.images.load_image`). :class:`ImageArray` is uint8
images in one ``.npy`` or HDF5 dataset: the Natural Scenes Dataset
distributes its 73,000 stimuli as ``nsd_stimuli.hdf5``, dataset ``imgBrick``
of shape (73000, 425, 425, 3). An array is read row by row (memory-mapped or
chunked; never whole; an HDF5 dataset compressed in chunks that would
decompress more than 64 MiB per image is refused, see
:mod:`~brainencoder.data.hdf5`) and a row is resized exactly as a decoded file is
(Pillow, bicubic), so an array and PNGs of the same pixels give the same
predictions. Both have ``len()``, ``load(index, size)``, ``names`` and
``key()`` (for caches); :func:`open_images` opens either from a path.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..util.errors import DataError
from .hdf5 import open_hdf5_images
from .images import load_image

__all__ = [
    "ARRAY_SUFFIXES",
    "IMAGE_SUFFIXES",
    "ImageArray",
    "ImageFiles",
    "ImageList",
    "ImageSource",
    "as_image_source",
    "list_images",
    "open_images",
]

logger = logging.getLogger(__name__)
ARRAY_SUFFIXES = {".npy", ".h5", ".hdf5"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _stat_digest(paths: Sequence[Path], extra: str = "") -> str:
    """Hash of the files' resolved paths, sizes and modification times (and ``extra``)."""
    digest = hashlib.sha256(extra.encode())
    for p in paths:
        st = p.stat()
        digest.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def list_images(folder: str | Path) -> list[Path]:
    """Image files of a folder, sorted by name; other files are skipped with a warning."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder not found")
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    for odd in (p for p in entries if not p.is_file() and not p.is_dir()):
        logger.warning("skipping %s: not a regular file (pipe, device or broken link)", odd)
    files = [p for p in entries if p.is_file()]
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    for other in sorted(set(files) - set(images)):
        logger.warning("skipping %s: not an image file", other)
    if not images:
        raise DataError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return images


class ImageFiles:
    """Image files (any format and mode :func:`~brainencoder.data.images.load_image` reads).

    Parameters
    ----------
    paths : sequence of path
    """

    def __init__(self, paths: Sequence[str | Path]) -> None:
        self.paths = [Path(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def names(self) -> list[str]:
        """File names, in order."""
        return [p.name for p in self.paths]

    def load(self, index: int, size: int | None = None) -> np.ndarray:
        """Image ``index`` decoded to uint8 (size, size, 3)."""
        return load_image(self.paths[index], size)

    def key(self) -> str:
        """Changes when a file is added, removed, replaced or edited."""
        return _stat_digest(self.paths)

    def close(self) -> None:
        """Nothing to close (for symmetry with :class:`ImageArray`)."""

    def __enter__(self) -> ImageFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ImageArray:
    """uint8 RGB images of shape (n_images, height, width, 3) in an array file.

    Parameters
    ----------
    path : path
        ``.npy`` (read memory-mapped, never unpickled) or ``.h5``/``.hdf5``.
    dataset : str, optional
        The HDF5 dataset; default: the file's only 4-D dataset with 3 channels
        last (``imgBrick`` in NSD's ``nsd_stimuli.hdf5``).
    rows : slice, optional
        The rows to use (e.g. ``slice(0, 1000)``; no step); default all.
        ``len()`` and :meth:`load` then count these only.

    Attributes
    ----------
    shape : tuple of int
        (n_images, height, width, 3) of the whole file.
    rows : range
        The file rows in use.

    Use it as a context manager (or call :meth:`close`) to close an HDF5 file.
    """

    def __init__(
        self, path: str | Path, dataset: str | None = None, rows: slice | None = None
    ) -> None:
        self.path = Path(path)
        self._file = None  # h5py's own lock makes reads from threads safe
        if not self.path.is_file():
            raise DataError(f"{self.path}: image array file not found")
        suffix = self.path.suffix.lower()
        if suffix == ".npy":
            if dataset is not None:
                raise DataError(f"{self.path}: --dataset applies to HDF5 files, not .npy")
            try:
                self.data = np.load(self.path, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError) as exc:
                raise DataError(f"{self.path}: not a readable .npy array ({exc})") from None
        elif suffix in (".h5", ".hdf5"):
            self.data = self._open_hdf5(dataset)
        else:
            raise DataError(
                f"{self.path}: not an image array file ({', '.join(sorted(ARRAY_SUFFIXES))})"
            )
        shape, dtype = tuple(self.data.shape), np.dtype(self.data.dtype)
        if dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3 or 0 in shape:
            self.close()
            hint = " (channels first? store them last)" if len(shape) == 4 and shape[1] == 3 else ""
            hint = " (no images)" if 0 in shape else hint
            raise DataError(
                f"{self.path}: expected uint8 RGB images of shape (n_images, height, width, 3); "
                f"got {dtype} {shape}{hint}"
            )
        from PIL import Image

        if shape[1] * shape[2] > (Image.MAX_IMAGE_PIXELS or np.inf):
            self.close()
            raise DataError(
                f"{self.path}: images of {shape[1]} x {shape[2]} pixels are too large to "
                "read safely; downscale them first"
            )
        self.shape = shape
        rows = rows or slice(None)
        start, stop = rows.start or 0, shape[0] if rows.stop is None else rows.stop
        if rows.step not in (None, 1) or not 0 <= start < stop <= shape[0]:
            self.close()
            raise DataError(
                f"{self.path}: rows {start}:{stop} are not a range within its {shape[0]} images"
            )
        self.rows = range(start, stop)

    def _open_hdf5(self, dataset: str | None) -> Any:
        """The image dataset, opened for reads that decompress a bounded amount each."""
        self._file, data = open_hdf5_images(self.path, dataset)
        return data

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, index: int, size: int | None = None) -> np.ndarray:
        """Image ``rows[index]`` as uint8 (size, size, 3), resized like a decoded file."""
        from PIL import Image

        try:
            image = np.array(self.data[self.rows[index]])
        except OSError as exc:  # a damaged chunk, or a compression filter HDF5 lacks
            raise DataError(
                f"{self.path}: cannot read image row {self.rows[index]} ({exc}); "
                "the file may be damaged: write it again"
            ) from None
        if size is None or image.shape[:2] == (size, size):
            return np.ascontiguousarray(image)
        resized = Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC)
        return np.asarray(resized, dtype=np.uint8)

    @property
    def names(self) -> list[str]:
        """The file rows in use, as text."""
        return [str(r) for r in self.rows]

    def key(self) -> str:
        """Changes with the file, the dataset or the rows."""
        name = getattr(self.data, "name", "")
        return _stat_digest([self.path], f"{name}|{self.rows.start}:{self.rows.stop}")

    def close(self) -> None:
        """Close the HDF5 file (nothing to do for a ``.npy``)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> ImageArray:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ImageList:
    """Images already in memory: PIL images, or uint8 RGB arrays (one (N, H, W, 3) or a list).

    Each is converted and resized exactly as a decoded file is (the same modes
    refused or converted, bicubic resize), so a notebook's images give the
    predictions their files would.

    Parameters
    ----------
    images : sequence of PIL.Image or ndarray of uint8, shape (N, H, W, 3) or (H, W, 3) each
    """

    def __init__(self, images: Sequence) -> None:
        self.images = list(images)
        for index, image in enumerate(self.images):
            if isinstance(image, np.ndarray):
                if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
                    raise DataError(
                        f"image {index}: arrays must be uint8 RGB of shape (height, width, 3); "
                        f"got {image.dtype} {image.shape}"
                        + (
                            " (channels first? use array.transpose(1, 2, 0))"
                            if image.ndim == 3 and image.shape[0] == 3
                            else ""
                        )
                    )
            elif not hasattr(image, "mode") or not hasattr(image, "resize"):
                raise DataError(
                    f"image {index}: a {type(image).__name__} is not an image; pass PIL images, "
                    "uint8 arrays (H, W, 3), file paths or a folder"
                )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def names(self) -> list[str]:
        """The images' positions, as text."""
        return [str(i) for i in range(len(self.images))]

    def load(self, index: int, size: int | None = None) -> np.ndarray:
        """Image ``index`` as uint8 (size, size, 3), resized like a decoded file."""
        from PIL import Image

        from .images import to_rgb

        image = self.images[index]
        pil = Image.fromarray(image) if isinstance(image, np.ndarray) else image
        pil = to_rgb(pil, f"image {index}")
        if size is not None and pil.size != (size, size):
            pil = pil.resize((size, size), Image.Resampling.BICUBIC)
        return np.asarray(pil, dtype=np.uint8)

    def key(self) -> str:
        """A hash of the pixels (for caches)."""
        digest = hashlib.sha256()
        for index in range(len(self.images)):
            digest.update(self.load(index).tobytes())
        return digest.hexdigest()

    def close(self) -> None:
        """Nothing to close."""

    def __enter__(self) -> ImageList:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


ImageSource = ImageFiles | ImageArray | ImageList


def as_image_source(images: object) -> ImageSource:
    """Any way a user holds images, as an image source.

    Parameters
    ----------
    images : ImageSource, path, sequence of paths, PIL image(s) or uint8 array
        A folder, an array file (``.npy``, HDF5) or one image file; a list of
        image files; PIL images; a uint8 array (N, H, W, 3) or one image (H, W, 3).

    Returns
    -------
    ImageFiles, ImageArray or ImageList
    """
    if isinstance(images, ImageFiles | ImageArray | ImageList):
        return images
    if isinstance(images, str | Path):
        path = Path(images)
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            return ImageFiles([path])
        return open_images(path)
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4:
            raise DataError(
                f"an image array must be (N, height, width, 3) uint8; got shape {images.shape}"
            )
        return ImageList(list(images))
    if hasattr(images, "mode") and hasattr(images, "resize"):  # one PIL image
        return ImageList([images])
    items = list(images)  # type: ignore[call-overload]
    if items and all(isinstance(x, str | Path) for x in items):
        return ImageFiles([Path(x) for x in items])
    return ImageList(items)


def open_images(
    path: str | Path, dataset: str | None = None, rows: slice | None = None
) -> ImageSource:
    """A folder's image files, or the images of an array file (see :class:`ImageArray`).

    ``dataset`` and ``rows`` apply to array files only.
    """
    path = Path(path)
    if path.suffix.lower() in ARRAY_SUFFIXES and not path.is_dir():
        return ImageArray(path, dataset, rows)
    if dataset is not None or rows is not None:
        raise DataError(f"{path}: --dataset and --rows apply to image array files")
    return ImageFiles(list_images(path))
