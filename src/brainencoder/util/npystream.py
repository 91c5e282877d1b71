"""``.npy`` arrays read from untrusted streams: the header first, never a byte past the array.

A zip member or a file from someone else may claim any size, hold a pickle,
or go on past its array. :class:`CappedReader` refuses to read past a budget
of bytes; :func:`read_npy_header` reads only the header (nothing is
unpickled), so the caller can check dtype and shape before any data is read;
:func:`read_npy_data` then reads exactly the array's bytes, in chunks, and
refuses anything after them.
"""

from __future__ import annotations

import lzma
import os
import zipfile
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from .errors import DataError

__all__ = [
    "HEADER_BYTES",
    "CappedReader",
    "npy_file_shape",
    "read_npy_data",
    "read_npy_header",
    "read_zip_member",
]

HEADER_BYTES = 8 + 4 + 10_000  # magic, header length, numpy's own limit on the header text
_CHUNK = 1 << 22


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


class CappedReader:
    """A binary file read through a budget of bytes (initially the header's).

    Parameters
    ----------
    raw : binary file
    where : str
        The file (and member) named in messages.
    """

    def __init__(self, raw: Any, where: str) -> None:
        self.raw, self.where, self.count, self.budget = raw, where, 0, HEADER_BYTES

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; raises instead of reading past the budget."""
        if n < 0 or self.count + n > self.budget:
            raise DataError(
                f"{self.where}: its .npy header is longer than {HEADER_BYTES} bytes; "
                "not an array file"
            )
        data = self.raw.read(n)
        self.count += len(data)
        return data


def read_npy_header(fh: CappedReader) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` from the header of the ``.npy`` stream ``fh``.

    Raises
    ------
    DataError
        Not a ``.npy`` stream (one line naming ``fh.where``).
    """
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):  # 3.0: 2.0 with UTF-8 text
            shape, fortran, dtype = fmt.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unknown .npy format version {version}")
    except ValueError as exc:
        raise DataError(f"{fh.where}: not a .npy array ({_one_line(exc)})") from None
    return tuple(shape), fortran, dtype


def read_npy_data(
    fh: CappedReader, shape: tuple[int, ...], fortran: bool, dtype: np.dtype
) -> np.ndarray:
    """The array after a header read by :func:`read_npy_header`: exactly its bytes, no more.

    Raises
    ------
    DataError
        Object dtype, fewer bytes than the array needs, or more after it.
    """
    if dtype.hasobject:
        raise DataError(f"{fh.where}: holds pickled Python objects; they are never loaded")
    n_items = int(np.prod(shape))
    n_bytes = dtype.itemsize * n_items
    fh.budget = fh.count + n_bytes
    out = np.empty(n_items, dtype)
    buffer = memoryview(out).cast("B")
    done = 0
    while done < n_bytes:
        chunk = fh.read(min(_CHUNK, n_bytes - done))
        if not chunk:
            raise DataError(f"{fh.where}: truncated ({done} of {n_bytes} data bytes)")
        buffer[done : done + len(chunk)] = chunk
        done += len(chunk)
    if fh.raw.read(1):  # in a zip, also where the member's CRC is checked
        raise DataError(f"{fh.where}: more bytes than its {shape} array; not a plain .npy")
    return out.reshape(shape[::-1]).T if fortran else out.reshape(shape)


def npy_file_shape(path: str | os.PathLike, what: str) -> tuple[int, ...]:
    """The shape in the header of the ``.npy`` file ``path`` (its data are not read).

    Raises
    ------
    DataError
        ``{path}: {what} not found``, or not a readable ``.npy`` file.
    """
    try:
        with open(path, "rb") as raw:
            return read_npy_header(CappedReader(raw, str(path)))[0]
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read {what} ({_one_line(exc)})") from None


def read_zip_member(
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    where: str,
    limit: int,
    why: str,
    check: Callable[[tuple[int, ...], np.dtype, int], None],
) -> np.ndarray:
    """The ``.npy`` array of a zip member, streamed: at most ``limit`` bytes are read.

    Parameters
    ----------
    zf : zipfile.ZipFile
    info : zipfile.ZipInfo
        The member.
    where : str
        The zip and the member, for messages.
    limit : int
        Bytes the member may hold (header and data); its declared size is
        refused above it before anything is read, and what is read stops there.
    why : str
        Why ``limit`` ("a float32 array of shape (4, 3) takes at most N bytes").
    check : callable
        ``check(shape, dtype, header_bytes)`` raises :class:`DataError` for a
        header to refuse, before any data is read.

    Raises
    ------
    DataError
        One line naming the member: encrypted, unknown compression, damaged
        (bad CRC, corrupt stream), larger than ``limit``, not a ``.npy`` array,
        pickled objects, truncated, or refused by ``check``.
    """
    if info.flag_bits & 0x1:
        raise DataError(f"{where}: encrypted; write the zip without a password")
    if info.file_size > limit:
        raise DataError(
            f"{where}: {info.file_size} bytes uncompressed, but {why}; not read (is it the "
            "right zip?)"
        )
    try:
        with zf.open(info) as raw:
            fh = CappedReader(raw, where)
            shape, fortran, dtype = read_npy_header(fh)
            check(shape, dtype, fh.count)
            if fh.count + dtype.itemsize * int(np.prod(shape)) > limit:
                raise DataError(
                    f"{where}: its header promises an array of shape {shape}, more than the "
                    f"{limit} bytes it may hold; not read"
                )
            return read_npy_data(fh, shape, fortran, dtype)
    except NotImplementedError:
        raise DataError(
            f"{where}: compression method {info.compress_type} is not supported; zip it "
            "again with deflate (the usual zip compression)"
        ) from None
    except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, RuntimeError) as exc:
        raise DataError(
            f"{where}: damaged member ({_one_line(exc)}); write or copy the zip again"
        ) from None
