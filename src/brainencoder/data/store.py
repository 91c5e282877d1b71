"""The prepared store: decoded images and fMRI in memory-mappable files.

``brainencoder prepare DATA_ROOT STORE`` decodes every image once (images that
several subjects share, identified by NSD id, are decoded once), resizes it to
a fixed square size and writes it into one uint8 array; each subject's fMRI is
copied into one float array (lh then rh columns). Layout::

    STORE/plan.json           what is being prepared (written first)
    STORE/images.u8           uint8 (n_images, size, size, 3), raw memmap
    STORE/chunks/NNNNNN.done  one marker per finished chunk of images
    STORE/fmri/subjXX.npy     float32/float16 (n_train, n_lh + n_rh)
    STORE/space.npz           group surface space (see brainencoder.core.space)
    STORE/manifest.json       written last: the store is complete

:func:`brainencoder.data.prepare.prepare_store` writes it; a store whose
``manifest.json`` is missing is never opened for training.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.space import GroupSpace
from ..util.errors import StoreError
from ..util.fileio import read_json
from ..util.version import __version__
from .splits import SPLIT_NAMES

__all__ = ["FORMAT_VERSION", "RowReader", "Store"]


FORMAT_VERSION = 1


class RowReader:
    """Reads rows of a C-ordered array file with ``preadv`` into a new array.

    Unlike indexing a memory map, the pages read are not mapped into the
    process, so reading a whole store in blocks does not grow the resident
    set (the OS page cache still serves repeated reads). Rows may be given in
    any order; contiguous runs are read with one call each.

    Parameters
    ----------
    path : path
    offset : int
        Byte offset of row 0.
    shape : tuple of int
        Shape of the whole array (rows first).
    dtype : numpy dtype
    """

    def __init__(self, path: str | Path, offset: int, shape: tuple[int, ...], dtype) -> None:
        self.path, self.offset = str(path), int(offset)
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._fd: int | None = None
        self._pid: int | None = None

    def _handle(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # one descriptor per process
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (any order), shape (len(rows), *shape[1:])."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.empty((rows.size, *self.shape[1:]), dtype=self.dtype)
        if rows.size == 0:
            return out
        if rows.min() < 0 or rows.max() >= self.shape[0]:
            raise IndexError(f"rows out of range [0, {self.shape[0]}) for {self.path}")
        order = np.argsort(rows, kind="stable")
        srt = rows[order]
        ordered = np.empty_like(out)
        flat = ordered.reshape(rows.size, -1).view(np.uint8).reshape(rows.size, self.row_bytes)
        breaks = np.flatnonzero(np.diff(srt) != 1) + 1
        fd = self._handle()
        for run in np.split(np.arange(rows.size), breaks):
            first, n = int(srt[run[0]]), run.size  # consecutive rows (duplicates split runs)
            got = os.preadv(fd, [flat[run[0] : run[-1] + 1]], self.offset + first * self.row_bytes)
            if got != n * self.row_bytes:
                raise StoreError(f"{self.path}: short read; the file is truncated")
        out[order] = ordered
        return out

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fd"] = state["_pid"] = None
        return state

    def __del__(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            with contextlib.suppress(OSError):
                os.close(self._fd)


def _npy_data_offset(path: Path) -> int:
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            np.lib.format.read_array_header_1_0(fh)
        else:
            np.lib.format.read_array_header_2_0(fh)
        return fh.tell()


@dataclass
class SubjectInfo:
    """What the store knows about one subject (see :class:`Store`)."""

    name: str
    index: int
    n_train: int
    n_test: int
    n_vertices: dict[str, int]
    train_rows: np.ndarray
    test_rows: np.ndarray
    test_names: list[str]
    splits: dict[str, np.ndarray]


class Store:
    """A complete prepared store, opened read-only with memory maps.

    Parameters
    ----------
    path : path
        Folder written by :func:`prepare_store`.

    Attributes
    ----------
    images : ndarray of uint8, shape (n_images, size, size, 3)
        All decoded images (memory-mapped, for inspection and small reads).
    read_images : RowReader
        ``store.read_images(rows)`` -> uint8 (len(rows), size, size, 3), read with
        ``preadv`` so streaming all images keeps the resident memory small.
    space : GroupSpace
    subjects : dict of str to SubjectInfo
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        manifest_path = self.path / "manifest.json"
        if not manifest_path.exists():
            hint = (
                "it is incomplete (prepare was interrupted); run 'brainencoder prepare' "
                "again to finish it"
                if (self.path / "plan.json").exists()
                else "run 'brainencoder prepare DATA_ROOT STORE' first"
            )
            raise StoreError(f"{self.path}: not a prepared store: {hint}")
        manifest = read_json(manifest_path, "store manifest")
        if manifest.get("format") != "brainencoder-store":
            raise StoreError(f"{manifest_path}: not a brainencoder store manifest")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"{self.path}: store format version {manifest.get('format_version')} (written by "
                f"brainencoder {manifest.get('package_version')}), but this brainencoder "
                f"{__version__} reads version {FORMAT_VERSION}; prepare the store again"
            )
        self.manifest = manifest
        shape = tuple(manifest["images"]["shape"])
        images_file = (self.path / manifest["images"]["file"]).resolve()
        if not images_file.is_relative_to(self.path.resolve()):
            raise StoreError(f"{self.path}: manifest points outside the store ({images_file})")
        if not images_file.exists() or images_file.stat().st_size != int(np.prod(shape)):
            raise StoreError(f"{images_file}: missing or wrong size; prepare the store again")
        self.images = np.memmap(images_file, dtype=np.uint8, mode="r", shape=shape)
        # store.read_images(rows): image rows read without mapping them into the process
        self.read_images = RowReader(images_file, 0, shape, np.uint8)
        self.nsd_ids = np.asarray(manifest["images"]["nsd_ids"], dtype=np.int64)
        names = list(manifest["subjects"])
        with np.load(self.path / Path(manifest["space"]).name, allow_pickle=False) as arrays:
            self.space = GroupSpace.from_arrays(names, dict(arrays))
        self.subjects: dict[str, SubjectInfo] = {}
        for i, (name, info) in enumerate(manifest["subjects"].items()):
            self.subjects[name] = SubjectInfo(
                name=name,
                index=i,
                n_train=info["n_train"],
                n_test=info["n_test"],
                n_vertices=info["n_vertices"],
                train_rows=np.asarray(info["train_rows"], dtype=np.int64),
                test_rows=np.asarray(info["test_rows"], dtype=np.int64),
                test_names=list(info["test_names"]),
                splits={k: np.asarray(v, dtype=np.int64) for k, v in info["splits"].items()},
            )
        self._fmri: dict[str, np.ndarray] = {}
        self._fmri_readers: dict[str, RowReader] = {}

    @property
    def names(self) -> list[str]:
        """Subject names in group-space order."""
        return list(self.subjects)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    def subject(self, name: str) -> SubjectInfo:
        """Information of subject ``name``; unknown names raise a clear error."""
        try:
            return self.subjects[name]
        except KeyError:
            raise StoreError(
                f"subject {name!r} is not in store {self.path} "
                f"(subjects: {', '.join(self.subjects)})"
            ) from None

    def fmri(self, name: str) -> np.ndarray:
        """Training fMRI of a subject, memory-mapped, shape (n_train, n_lh + n_rh)."""
        if name not in self._fmri:
            info = self.subject(name)
            path = (self.path / self.manifest["subjects"][name]["fmri"]).resolve()
            if not path.is_relative_to(self.path.resolve()):
                raise StoreError(f"{self.path}: manifest points outside the store ({path})")
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise StoreError(f"{path}: cannot read ({exc}); prepare the store again") from None
            expected = (info.n_train, sum(info.n_vertices.values()))
            if arr.shape != expected:
                raise StoreError(f"{path}: shape {arr.shape}, expected {expected}")
            # the reader first: another thread that sees the array may read through it at once
            self._fmri_readers[name] = RowReader(path, _npy_data_offset(path), arr.shape, arr.dtype)
            self._fmri[name] = arr
        return self._fmri[name]

    def read_fmri(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Rows of a subject's training fMRI as float32, shape (len(rows), n_lh + n_rh).

        Reads with ``preadv`` instead of the memory map, so streaming through
        the whole store keeps the process's resident memory small.
        """
        self.fmri(name)
        return self._fmri_readers[name](rows).astype(np.float32, copy=False)

    def identity(self) -> dict[str, str]:
        """What makes two stores interchangeable for a model: data, images, splits, space.

        A run records this; ``evaluate --store`` compares it, so a store of
        other data, another image size, other splits or another vertex space
        is refused instead of giving wrong numbers.
        """
        splits = {n: {k: v.tolist() for k, v in self.subject(n).splits.items()} for n in self.names}
        digest = hashlib.sha256(json.dumps(splits, sort_keys=True).encode()).hexdigest()[:16]
        space = hashlib.sha256()
        for key, value in sorted(self.space.to_arrays().items()):
            space.update(key.encode())
            space.update(np.ascontiguousarray(value).tobytes())
        return {
            "fingerprint": str(self.manifest["source"]["fingerprint"]),
            "image_size": str(self.image_size),
            "splits": digest,
            "space": space.hexdigest()[:16],
        }

    def split_rows(self, name: str, split: str) -> np.ndarray:
        """Training-row indices of ``split`` ('train', 'val', 'testval' or 'all')."""
        info = self.subject(name)
        if split == "all":
            return np.arange(info.n_train)
        if split not in SPLIT_NAMES:
            raise StoreError(
                f"'split' must be one of {{'train', 'val', 'testval', 'all'}}; got {split!r}"
            )
        return info.splits[split]

    def summary(self) -> str:
        """Human-readable summary of the store."""
        lines = [
            f"store {self.path}: {self.images.shape[0]} unique images at "
            f"{self.image_size}x{self.image_size}, {self.space.n_vertices} group vertices "
            f"(lh {self.space.vertices['lh'].size}, rh {self.space.vertices['rh'].size})"
        ]
        for name, info in self.subjects.items():
            sizes = ", ".join(f"{k} {len(v)}" for k, v in info.splits.items())
            lines.append(
                f"  {name}: {info.n_train} train ({sizes}), {info.n_test} test, "
                f"lh {info.n_vertices['lh']} / rh {info.n_vertices['rh']} vertices"
            )
        return "\n".join(lines)
