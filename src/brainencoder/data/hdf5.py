"""Images of an HDF5 dataset, opened so that reading one image decompresses a bounded amount.

HDF5 compresses a chunked dataset chunk by chunk, and reading any part of a
chunk decompresses all of it. A dataset of images stored as one compressed
chunk (an 880 KB file of 0.9 GB of zeros, or any array compressed whole)
would decompress the whole array for every image read. :func:`open_hdf5_images`
measures a dataset's *row block* before any image is read: what is decompressed
to read the images that one chunk spans (those rows at full height, width and
channels, chunk padding included). A compressed (filtered) dataset whose row
block is larger than :data:`MAX_ROW_BLOCK_BYTES` (64 MiB, about 120 of NSD's
425 x 425 images) and than two of its images is refused, with the
``h5repack`` command that rewrites it in chunks of one image. A dataset that
is accepted is opened with a chunk cache of two row blocks, so images read in
order decompress each chunk once, not once per image. Contiguous and
uncompressed chunked datasets are read directly (HDF5 reads only the image).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..util.errors import DataError

__all__ = ["MAX_ROW_BLOCK_BYTES", "open_hdf5_images", "row_block_bytes"]

#: the most a compressed dataset may decompress to read one image (unless two images are more)
MAX_ROW_BLOCK_BYTES = 64 * 2**20


def row_block_bytes(shape: tuple[int, ...], chunks: tuple[int, ...], itemsize: int) -> int:
    """Bytes decompressed to read one row of a chunked dataset: every chunk it touches.

    Parameters
    ----------
    shape : tuple of int
        The dataset's shape (rows first).
    chunks : tuple of int
        Its chunk shape (may exceed ``shape`` in a resizable dataset).
    itemsize : int
        Bytes per value.

    Returns
    -------
    int
        ``chunks[0]`` rows at every other axis's length rounded up to whole chunks.
    """
    padded = [math.ceil(n / c) * c for n, c in zip(shape[1:], chunks[1:], strict=True)]
    return chunks[0] * math.prod(padded) * itemsize


def _size(n_bytes: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes:.0f} {unit}" if unit == "bytes" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    raise AssertionError("unreachable")


def _prime_at_least(n: int) -> int:
    """The smallest prime >= ``n`` (the chunk cache's slot count; HDF5 advises a prime)."""
    candidate = max(n, 2)
    while any(candidate % d == 0 for d in range(2, math.isqrt(candidate) + 1)):
        candidate += 1
    return candidate


def _find(file: Any, path: Path, dataset: str | None) -> str:
    """The name of the image dataset: ``dataset``, or the file's only 4-D one with 3 channels."""
    import h5py

    found: list[str] = []
    file.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None)
    if dataset is None:
        images = [n for n in found if file[n].ndim == 4 and file[n].shape[-1] == 3]
        if len(images) != 1:
            raise DataError(
                f"{path}: {len(images)} datasets look like images "
                f"({', '.join(images) or 'none'}; all datasets: {', '.join(found) or 'none'}); "
                "name one with --dataset"
            )
        return images[0]
    if dataset.strip("/") not in found:
        raise DataError(f"{path}: no dataset {dataset!r}; it has {', '.join(found) or 'none'}")
    return dataset.strip("/")


def _cache(path: Path, name: str, data: Any) -> tuple[int, int] | None:
    """The chunk cache (slots, bytes) that reads ``data`` in bounded row blocks, or None.

    Raises
    ------
    DataError
        Its row block decompresses to more than the limit.
    """
    chunks = data.chunks
    if chunks is None or data.ndim < 2 or data.id.get_create_plist().get_nfilters() == 0:
        return None  # contiguous or unfiltered: HDF5 reads only the requested image
    block = row_block_bytes(tuple(data.shape), tuple(chunks), data.dtype.itemsize)
    image = math.prod(data.shape[1:]) * data.dtype.itemsize
    allowed = max(MAX_ROW_BLOCK_BYTES, 2 * image)
    if block > allowed:
        layout = "x".join(str(n) for n in (1, *data.shape[1:]))
        raise DataError(
            f"{path}: dataset {name!r} is compressed in chunks of "
            f"{' x '.join(map(str, chunks))} ({data.compression or 'filtered'}), so reading "
            f"one image would decompress {_size(block)} (at most {_size(allowed)} "
            f"is allowed); rewrite it in chunks of one image: "
            f"h5repack -l {name}:CHUNK={layout} {path} NEW.h5"
        )
    per_block = math.prod(math.ceil(n / c) for n, c in zip(data.shape[1:], chunks[1:], strict=True))
    return _prime_at_least(4 * per_block), 2 * block


def open_hdf5_images(path: str | Path, dataset: str | None = None) -> tuple[Any, Any]:
    """Open the image dataset of an HDF5 file for bounded reads (see the module's text).

    Parameters
    ----------
    path : path
        The HDF5 file.
    dataset : str, optional
        The dataset; default: the file's only 4-D dataset with 3 channels last.

    Returns
    -------
    file : h5py.File
        Open for reading; close it when done.
    data : h5py.Dataset
        The dataset, in a file opened with a chunk cache of two row blocks.

    Raises
    ------
    DataError
        The file is not HDF5, has no such (or no single) image dataset, or
        reading one image would decompress more than :data:`MAX_ROW_BLOCK_BYTES`.
    """
    import h5py

    path = Path(path)
    try:
        file = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file ({exc})") from None
    try:
        name = _find(file, path, dataset)
        cache = _cache(path, name, file[name])
        _, default_slots, default_bytes, _ = file.id.get_access_plist().get_cache()
    finally:
        file.close()
    if cache is None:
        file = h5py.File(path, "r")
    else:  # never smaller than h5py's default cache
        slots, nbytes = max(cache[0], default_slots), max(cache[1], default_bytes)
        file = h5py.File(path, "r", rdcc_nslots=slots, rdcc_nbytes=nbytes)
    return file, file[name]
