"""The prepared store: decoded images and fMRI in memory-mappable files.

``brainencoder prepare DATA_ROOT STORE`` decodes every image once (images that
several subjects share, identified by NSD id, are decoded once), resizes it to
a fixed square size and writes it into one uint8 array; each subject's fMRI is
copied into one float array (lh then rh columns). Layout::

    STORE/plan.json           what is being prepared (written first)
    STORE/images.u8           uint8 (n_images, size, size, 3), raw memmap
    STORE/chunks/NNNNNN.done  one marker per finished chunk of images
    STORE/fmri/subjXX.npy     float32/float16 (n_train, n_lh + n_rh)
    STORE/space.npz           group surface space (see brainencoder.space)
    STORE/manifest.json       written last: the store is complete

A killed ``prepare`` resumes from the chunk markers; a store whose
``manifest.json`` is missing is never opened for training.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import DataError, StoreError
from ..fileio import atomic_path, check_free_space, read_json, write_json_atomic
from ..ownership import check_output_location, mark_owned, replace_owned
from ..space import GroupSpace
from .images import load_image
from .layout import HEMIS, DatasetLayout, read_layout
from .splits import SPLIT_MODES, SPLIT_NAMES, make_image_splits, make_splits

__all__ = ["FORMAT_VERSION", "Store", "prepare_store"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_CHUNK = 64
_FMRI_DTYPES = {"float32": np.float32, "float16": np.float16}
_NAN_POLICIES = ("error", "zero")


def _fingerprint(layout: DatasetLayout) -> str:
    """Hash of names, sizes and modification times of every source file."""
    digest = hashlib.sha256()
    for subj in layout.subjects.values():
        files = [
            *subj.train_images,
            *subj.test_images,
            *(subj.fmri_path(h) for h in HEMIS),
            *(subj.roi_dir / f"{h}.all-vertices_fsaverage_space.npy" for h in HEMIS),
        ]
        for path in files:
            st = path.stat()
            digest.update(
                f"{path.relative_to(layout.root)}|{st.st_size}|{st.st_mtime_ns}\n".encode()
            )
    return digest.hexdigest()


def _decode_chunk(
    images_file: str, shape: tuple[int, ...], start: int, paths: list[str], done_marker: str
) -> int:
    """Worker: decode ``paths`` and write them as rows ``start:`` of the image file.

    The chunk is written with one ``pwrite`` (no memory map, no per-chunk
    msync); the marker is created after the write returned, so a killed worker
    leaves its chunk unmarked. The whole file is fsynced once before the
    manifest is written.
    """
    rows = np.empty((len(paths), *shape[1:]), dtype=np.uint8)
    for i, path in enumerate(paths):
        rows[i] = load_image(path, shape[1])
    fd = os.open(images_file, os.O_WRONLY)
    try:
        os.pwrite(fd, rows.tobytes(), start * rows[0].nbytes)
    finally:
        os.close(fd)
    Path(done_marker).touch()
    return len(paths)


@contextlib.contextmanager
def _stop_workers_on_signal(pool: ProcessPoolExecutor):
    """SIGTERM or Ctrl-C ends the decoding workers too, not only this process.

    Finished chunks keep their markers, so running ``prepare`` again resumes.
    """
    import signal

    def handle(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"{signal.Signals(signum).name}: prepare stopped; rerun to resume")

    old = None
    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        old = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    except BaseException:
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def _copy_fmri(layout: DatasetLayout, name: str, path: Path, dtype: type, nan_policy: str) -> None:
    subj = layout[name]
    arrays = [subj.load_fmri(h) for h in HEMIS]
    n_rows = arrays[0].shape[0]
    n_cols = sum(a.shape[1] for a in arrays)
    for hemi, a in zip(HEMIS, arrays):
        if a.dtype.kind not in "fiu":
            raise DataError(
                f"{subj.fmri_path(hemi)}: holds {a.dtype} values, not numbers; write the "
                "responses as float32"
            )
    with atomic_path(path, suffix=".npy") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n_rows, n_cols))
        for start in range(0, n_rows, 1024):
            stop = min(start + 1024, n_rows)
            source = np.concatenate([np.asarray(a[start:stop]) for a in arrays], axis=1)
            with np.errstate(over="ignore"):
                chunk = source.astype(dtype)  # check the values that will be stored
            bad = ~np.isfinite(chunk)
            if bad.any():
                row = start + int(np.flatnonzero(bad.any(axis=1))[0])
                hemi = HEMIS[0] if bad[:, : arrays[0].shape[1]].any() else HEMIS[1]
                overflow = bool((bad & np.isfinite(source)).any())
                if overflow:
                    raise DataError(
                        f"{subj.fmri_path(hemi)}: row {row} holds values beyond the range of "
                        f"{np.dtype(dtype).name} (they would be stored as inf); prepare with "
                        "--fmri-dtype float32, or check the file's scale"
                    )
                if nan_policy == "error":
                    raise DataError(
                        f"{subj.fmri_path(hemi)}: NaN or inf at row {row}; fix the file, or "
                        "prepare with --nan-policy zero to replace them by 0 (the voxel mean "
                        "after z-scoring)"
                    )
                chunk[bad] = 0.0
            out[start:stop] = chunk
        out.flush()
        del out


def prepare_store(
    data_root: str | Path,
    store: str | Path,
    image_size: int = 256,
    fmri_dtype: str = "float32",
    nan_policy: str = "error",
    split_seed: int = 0,
    split_fractions: tuple[float, float, float] = (0.85, 0.10, 0.05),
    split_mode: str = "image",
    subjects: list[str] | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> Store:
    """Prepare (or resume preparing) a store from a challenge-layout dataset.

    Parameters
    ----------
    data_root : path
        Folder holding the ``subjXX`` folders.
    store : path
        Output folder.
    image_size : int, default=256
        Side of the stored square images (256 suits 224-pixel trunks with
        random-resized-crop augmentation).
    fmri_dtype : {"float32", "float16"}, default="float32"
    nan_policy : {"error", "zero"}, default="error"
        What to do with NaN/inf in the fMRI: stop with an error naming the
        file and row, or replace them by 0.
    split_seed : int, default=0
        Seed of the per-subject train/val/testval split saved in the store.
    split_fractions : tuple of 3 floats, default=(0.85, 0.10, 0.05)
    split_mode : {"image", "subject"}, default="image"
        "image": an image shown to several subjects is in the same split for
        all of them; "subject": each subject's images are split on their own
        (the original entry's splits).
    subjects : list of str, optional
        Subset of subjects; default all.
    workers : int, optional
        Decoding processes; default all cores.
    overwrite : bool, default=False
        Replace a store prepared from other data or with other options.
    progress : bool, optional
        Show a progress bar (default: when writing to a terminal).

    Returns
    -------
    Store
        The opened, complete store.
    """
    from tqdm.auto import tqdm

    if fmri_dtype not in _FMRI_DTYPES:
        raise StoreError(f"'fmri_dtype' must be one of {set(_FMRI_DTYPES)}; got {fmri_dtype!r}")
    if nan_policy not in _NAN_POLICIES:
        raise StoreError(f"'nan_policy' must be one of {set(_NAN_POLICIES)}; got {nan_policy!r}")
    if split_mode not in SPLIT_MODES:
        raise StoreError(f"'split_mode' must be one of {set(SPLIT_MODES)}; got {split_mode!r}")
    if not 16 <= image_size <= 1024:
        raise StoreError(f"'image_size' must be in [16, 1024]; got {image_size}")
    store = Path(store)
    check_output_location(store, [data_root])
    layout = read_layout(data_root, subjects)
    options = {
        "image_size": image_size,
        "fmri_dtype": fmri_dtype,
        "nan_policy": nan_policy,
        "split_seed": split_seed,
        "split_fractions": list(split_fractions),
        "split_mode": split_mode,
        "subjects": layout.names,
    }
    fingerprint = _fingerprint(layout)

    # unique images by NSD id, first occurrence wins
    sources: dict[int, Path] = {}
    for subj in layout.subjects.values():
        for nsd, path in zip(
            [*subj.nsd_train, *subj.nsd_test], [*subj.train_images, *subj.test_images]
        ):
            sources.setdefault(int(nsd), path)
    nsd_ids = np.array(sorted(sources), dtype=np.int64)
    plan = {
        "format_version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "options": options,
        "n_images": int(nsd_ids.size),
    }

    manifest_path, plan_path = store / "manifest.json", store / "plan.json"
    if store.exists() and any(store.iterdir()):
        if plan_path.exists():
            old = read_json(plan_path, "store plan")
            same = {k: old.get(k) for k in plan} == plan
        else:
            same = False
        if not same and not overwrite:
            raise StoreError(
                f"{store} already holds a store of other data or options (or other files); "
                "choose another folder or pass --overwrite to replace it"
            )
        if not same:
            replace_owned(store, "store", [data_root])
        elif manifest_path.exists():
            logger.info("store %s is already complete", store)
            return Store(store)
    store.mkdir(parents=True, exist_ok=True)
    mark_owned(store, "store")
    shape = (int(nsd_ids.size), image_size, image_size, 3)
    fmri_bytes = (
        sum(
            len(s.train_images) * (s.n_vertices("lh") + s.n_vertices("rh"))
            for s in layout.subjects.values()
        )
        * np.dtype(fmri_dtype).itemsize
    )
    images_file = store / "images.u8"
    if not plan_path.exists():
        check_free_space(store, int(np.prod(shape)) + fmri_bytes, f"the prepared store {store}")
        write_json_atomic(plan_path, plan)
    if not images_file.exists() or images_file.stat().st_size != int(np.prod(shape)):
        with atomic_path(images_file) as tmp, open(tmp, "wb") as fh:
            fh.truncate(int(np.prod(shape)))
        shutil.rmtree(store / "chunks", ignore_errors=True)
    chunk_dir = store / "chunks"
    chunk_dir.mkdir(exist_ok=True)
    todo = [s for s in range(0, shape[0], _CHUNK) if not (chunk_dir / f"{s:08d}.done").exists()]
    logger.info("decoding %d images (%d chunks to do) into %s", shape[0], len(todo), store)
    bar = tqdm(
        total=shape[0],
        initial=shape[0] - sum(min(_CHUNK, shape[0] - s) for s in todo),
        unit="img",
        desc="prepare images",
        disable=None if progress is None else not progress,
    )
    with (
        ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as pool,
        _stop_workers_on_signal(pool),
    ):
        futures = [
            pool.submit(
                _decode_chunk,
                str(images_file),
                shape,
                s,
                [str(sources[int(n)]) for n in nsd_ids[s : s + _CHUNK]],
                str(chunk_dir / f"{s:08d}.done"),
            )
            for s in todo
        ]
        # flush written chunks to disk in the background while workers keep decoding,
        # so the final fsync (before the manifest) has little left to do
        with open(images_file, "rb+") as fh, ThreadPoolExecutor(1) as syncer:
            pending = []
            for i, fut in enumerate(futures):
                bar.update(fut.result())
                if i % 8 == 7:
                    pending.append(syncer.submit(os.fsync, fh.fileno()))
            for job in pending:
                job.result()
            os.fsync(fh.fileno())
    bar.close()
    (store / "fmri").mkdir(exist_ok=True)
    subjects_info = {}
    if split_mode == "image":
        all_splits = make_image_splits(
            {n: s.nsd_train for n, s in layout.subjects.items()}, split_fractions, split_seed
        )
    for name, subj in layout.subjects.items():
        path = store / "fmri" / f"{name}.npy"
        if not path.exists():
            _copy_fmri(layout, name, path, _FMRI_DTYPES[fmri_dtype], nan_policy)
        if split_mode == "image":
            splits = all_splits[name]
        else:
            splits = make_splits(len(subj.train_images), split_fractions, split_seed, key=name)
        subjects_info[name] = {
            "n_train": len(subj.train_images),
            "n_test": len(subj.test_images),
            "n_vertices": {h: subj.n_vertices(h) for h in HEMIS},
            "nsd_train": subj.nsd_train.tolist(),
            "nsd_test": subj.nsd_test.tolist(),
            "train_rows": np.searchsorted(nsd_ids, subj.nsd_train).tolist(),
            "test_rows": np.searchsorted(nsd_ids, subj.nsd_test).tolist(),
            "test_names": [p.name for p in subj.test_images],
            "fmri": f"fmri/{name}.npy",
            "splits": {k: v.tolist() for k, v in splits.items()},
        }
    space = GroupSpace.from_masks({n: s.masks for n, s in layout.subjects.items()})
    with atomic_path(store / "space.npz", suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **space.to_arrays())
    manifest = {
        "format": "brainencoder-store",
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "source": {"root": str(Path(data_root).absolute()), "fingerprint": fingerprint},
        "options": options,
        "images": {"file": "images.u8", "shape": list(shape), "nsd_ids": nsd_ids.tolist()},
        "subjects": subjects_info,
        "space": "space.npz",
    }
    write_json_atomic(manifest_path, manifest)
    shutil.rmtree(chunk_dir, ignore_errors=True)
    return Store(store)


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
            self._fmri[name] = arr
            self._fmri_readers[name] = RowReader(path, _npy_data_offset(path), arr.shape, arr.dtype)
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
