"""``brainencoder prepare``: decode a challenge-layout dataset into a store.

Every image is decoded once (images that several subjects share, identified
by NSD id, once for all of them) in worker processes, resized to a square and
written chunk by chunk into the store's uint8 array, with one marker file per
finished chunk; each subject's fMRI is copied into one float array. The
store's files are described in :mod:`brainencoder.data.store`; a killed
``prepare`` resumes from the chunk markers, and the manifest is written last.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..core.space import GroupSpace
from ..util.errors import BrainEncoderError, DataError, StoreError
from ..util.fileio import atomic_path, check_free_space, read_json, write_json_atomic
from ..util.ownership import check_output_location, mark_owned, replace_owned
from ..util.processes import stop_workers_on_signal, worker_pool
from ..util.typecheck import check_seed
from ..util.version import __version__
from .images import load_image
from .layout import HEMIS, DatasetLayout, read_layout
from .splits import SPLIT_MODES, make_image_splits, make_splits
from .store import FORMAT_VERSION, Store

__all__ = ["prepare_store"]

logger = logging.getLogger(__name__)

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


def _overflow_hint(values: np.ndarray, dtype: type) -> str:
    """What to do about fMRI ``values`` too large for the store's ``dtype``."""
    with np.errstate(over="ignore"):
        fit32 = bool(np.isfinite(values.astype(np.float32)).all())
    if np.dtype(dtype) != np.float32 and fit32:
        return "prepare with --fmri-dtype float32 (the default), which holds them"
    return (
        "no --fmri-dtype holds them (float32 is the widest): check the file's scale, fMRI "
        "responses are z-scored values of a few units"
    )


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
                overflow = bad & np.isfinite(source)
                if overflow.any():
                    raise DataError(
                        f"{subj.fmri_path(hemi)}: row {row} holds {source.dtype} values beyond "
                        f"the range of {np.dtype(dtype).name} (they would be stored as inf); "
                        f"{_overflow_hint(source[overflow], dtype)}"
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
    if fmri_dtype not in _FMRI_DTYPES:
        raise StoreError(f"'fmri_dtype' must be one of {set(_FMRI_DTYPES)}; got {fmri_dtype!r}")
    if nan_policy not in _NAN_POLICIES:
        raise StoreError(f"'nan_policy' must be one of {set(_NAN_POLICIES)}; got {nan_policy!r}")
    if split_mode not in SPLIT_MODES:
        raise StoreError(f"'split_mode' must be one of {set(SPLIT_MODES)}; got {split_mode!r}")
    if not 16 <= image_size <= 1024:
        raise StoreError(f"'image_size' must be in [16, 1024]; got {image_size}")
    split_seed = check_seed("split_seed", split_seed)
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
    existed, resume = store.exists(), False
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
        else:
            resume = True  # an unfinished store of the same data and options
    try:
        _write_store(data_root, layout, store, plan, sources, nsd_ids, workers, progress)
    except BrainEncoderError:
        # refused input (an image or fMRI file): the store begun here goes; one begun by
        # an earlier run of the same plan (a resume) stays as it was found
        if not resume:
            _remove_store(store, existed)
        raise
    return Store(store)


def _remove_store(store: Path, keep_folder: bool) -> None:
    """Remove the store this call wrote; the folder itself only if this call created it."""
    if keep_folder:
        for entry in list(store.iterdir()) if store.is_dir() else []:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    else:
        shutil.rmtree(store, ignore_errors=True)


def _write_store(
    data_root: str | Path,
    layout: DatasetLayout,
    store: Path,
    plan: dict,
    sources: dict[int, Path],
    nsd_ids: np.ndarray,
    workers: int | None,
    progress: bool | None,
) -> None:
    """Write (or resume writing) ``store``: fMRI first (it is checked), then the images."""
    from tqdm.auto import tqdm

    options = plan["options"]
    fmri_dtype, nan_policy = options["fmri_dtype"], options["nan_policy"]
    split_mode, split_seed = options["split_mode"], options["split_seed"]
    split_fractions = tuple(options["split_fractions"])
    image_size = options["image_size"]
    plan_path = store / "plan.json"
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
    # the fMRI first: values it refuses (NaN, beyond the dtype's range) stop before any image
    (store / "fmri").mkdir(exist_ok=True)
    for name in layout.names:
        path = store / "fmri" / f"{name}.npy"
        if not path.exists():
            _copy_fmri(layout, name, path, _FMRI_DTYPES[fmri_dtype], nan_policy)
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
    with worker_pool(workers) as pool, stop_workers_on_signal(pool, "prepare"):
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
    subjects_info = {}
    if split_mode == "image":
        all_splits = make_image_splits(
            {n: s.nsd_train for n, s in layout.subjects.items()}, split_fractions, split_seed
        )
    for name, subj in layout.subjects.items():
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
        "source": {"root": str(Path(data_root).absolute()), "fingerprint": plan["fingerprint"]},
        "options": options,
        "images": {"file": "images.u8", "shape": list(shape), "nsd_ids": nsd_ids.tolist()},
        "subjects": subjects_info,
        "space": "space.npz",
    }
    write_json_atomic(store / "manifest.json", manifest)
    shutil.rmtree(chunk_dir, ignore_errors=True)
