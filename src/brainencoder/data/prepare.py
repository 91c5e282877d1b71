"""``brainencoder prepare``: decode a dataset into a store.

Your own experiment's simple layout (:mod:`.simple_layout`) is first written in
the challenge layout inside the store (:mod:`.simple_convert`), then read as the challenge's.

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
from dataclasses import dataclass, replace
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
from .prepare_fmri import copy_store_fmri, subject_records
from .simple_convert import conversion_bytes, convert_simple, original_names, resolve_noise_ceiling
from .simple_layout import SimpleLayout, is_simple_layout, read_simple_layout
from .splits import SPLIT_MODES
from .store import FORMAT_VERSION, Store

__all__ = ["PrepareOptions", "prepare_store"]

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


@dataclass(frozen=True)
class PrepareOptions:
    """How a store is prepared: saved in its plan (other values make another store).

    Attributes
    ----------
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
    noise_ceiling : bool, optional
        Simple layout only: estimate noise ceilings from repeated trials
        (True: required, an error if a subject shows every image once;
        False: never; default: when every subject has repeated images).
    """

    image_size: int = 256
    fmri_dtype: str = "float32"
    nan_policy: str = "error"
    split_seed: int = 0
    split_fractions: tuple[float, float, float] = (0.85, 0.10, 0.05)
    split_mode: str = "image"
    noise_ceiling: bool | None = None

    def checked(self) -> PrepareOptions:
        """These options with the seed as an int; StoreError or ConfigError naming a bad one."""
        for key, allowed in (
            ("fmri_dtype", _FMRI_DTYPES),
            ("nan_policy", _NAN_POLICIES),
            ("split_mode", SPLIT_MODES),
        ):
            if getattr(self, key) not in allowed:
                raise StoreError(
                    f"'{key}' must be one of {set(allowed)}; got {getattr(self, key)!r}"
                )
        if not 16 <= self.image_size <= 1024:
            raise StoreError(f"'image_size' must be in [16, 1024]; got {self.image_size}")
        return replace(self, split_seed=check_seed("split_seed", self.split_seed))


def prepare_store(
    data_root: str | Path,
    store: str | Path,
    options: PrepareOptions | None = None,
    *,
    subjects: list[str] | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> Store:
    """Prepare (or resume preparing) a store from the challenge's layout or your own experiment's.

    Parameters
    ----------
    data_root : path
        Folder holding the ``subjXX`` folders: the Algonauts 2023 layout, or
        the simple layout of your own experiment (an ``experiment.json`` beside
        them; see :mod:`brainencoder.data.simple_layout`), which is converted
        into ``STORE/source`` (the challenge layout) and ``STORE/truth``
        (test responses and noise ceilings; :mod:`brainencoder.data.simple_convert`).
    store : path
        Output folder.
    options : PrepareOptions, optional
        Image size, fMRI dtype and NaN policy, splits, noise ceilings; default
        ``PrepareOptions()``.
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
    options = (options or PrepareOptions()).checked()
    store = Path(store)
    check_output_location(store, [data_root])
    simple = read_simple_layout(data_root, subjects) if is_simple_layout(data_root) else None
    layout = None if simple is not None else read_layout(data_root, subjects)
    if layout is not None and options.noise_ceiling:
        raise DataError(
            f"{data_root}: noise ceilings are estimated from the repeated trials of your own "
            "experiment's layout (docs/own-data.md); the challenge's data hold one response "
            "per image: pass the challenge's ceilings to 'evaluate --noise-ceiling' instead"
        )
    saved = {  # the plan's options
        "image_size": options.image_size,
        "fmri_dtype": options.fmri_dtype,
        "nan_policy": options.nan_policy,
        "split_seed": options.split_seed,
        "split_fractions": list(options.split_fractions),
        "split_mode": options.split_mode,
        "subjects": (simple or layout).names,
    }
    if simple is not None:
        nc = resolve_noise_ceiling(simple, options.noise_ceiling)
        saved.update(layout="simple", noise_ceiling=nc)
    plan = {
        "format_version": FORMAT_VERSION,
        "fingerprint": simple.fingerprint() if simple else _fingerprint(layout),
        "options": saved,
        "n_images": simple.n_images if simple else _unique_images(layout)[1].size,
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
        if simple is None:
            _begin(store, plan, _store_bytes(layout, plan))
            _write_store(data_root, layout, store, plan, workers, progress)
        else:
            _prepare_simple(simple, store, plan, workers, progress)
    except BrainEncoderError as exc:
        # refused input (an image or fMRI file): the store begun here goes; one begun by
        # an earlier run of the same plan (a resume) stays as it was found
        if not resume:
            _remove_store(store, existed)
        if simple is not None:
            raise original_names(exc, simple, store / "source") from None
        raise
    return Store(store)


def _unique_images(layout: DatasetLayout) -> tuple[dict[int, Path], np.ndarray]:
    """Each distinct image (by NSD id, first occurrence wins) and the sorted ids."""
    sources: dict[int, Path] = {}
    for subj in layout.subjects.values():
        for nsd, path in zip(
            [*subj.nsd_train, *subj.nsd_test], [*subj.train_images, *subj.test_images]
        ):
            sources.setdefault(int(nsd), path)
    return sources, np.array(sorted(sources), dtype=np.int64)


def _store_bytes(layout: DatasetLayout, plan: dict) -> int:
    """Bytes of the store's images and fMRI."""
    options = plan["options"]
    fmri = sum(
        len(s.train_images) * (s.n_vertices("lh") + s.n_vertices("rh"))
        for s in layout.subjects.values()
    )
    item = np.dtype(options["fmri_dtype"]).itemsize
    return plan["n_images"] * options["image_size"] ** 2 * 3 + fmri * item


def _begin(store: Path, plan: dict, needed: int) -> None:
    """Create and mark the store folder; check the disk and write the plan (unless resuming)."""
    store.mkdir(parents=True, exist_ok=True)
    mark_owned(store, "store")
    if not (store / "plan.json").exists():
        check_free_space(store, needed, f"the prepared store {store}")
        write_json_atomic(store / "plan.json", plan)


def _prepare_simple(
    simple: SimpleLayout, store: Path, plan: dict, workers: int | None, progress: bool | None
) -> None:
    """Convert ``simple`` into ``STORE/source`` (and ``STORE/truth``), then prepare from it."""
    options = plan["options"]
    n_train = sum(
        s.order(False).size * sum(map(s.n_vertices, HEMIS)) for s in simple.subjects.values()
    )
    needed = conversion_bytes(simple) + plan["n_images"] * options["image_size"] ** 2 * 3
    _begin(store, plan, needed + n_train * np.dtype(options["fmri_dtype"]).itemsize)
    nan_policy, noise = options["nan_policy"], options["noise_ceiling"]
    convert_simple(simple, store / "source", store / "truth", nan_policy, noise, workers)
    layout = read_layout(store / "source", simple.names)
    source = {
        "layout": "simple",
        "data": str(Path(simple.root).absolute()),
        "truth": str((store / "truth").absolute()),
    }
    _write_store(store / "source", layout, store, plan, workers, progress, source)


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
    workers: int | None,
    progress: bool | None,
    source: dict | None = None,
) -> None:
    """Write (or resume writing) ``store`` after :func:`_begin`: fMRI first, then the images.

    ``source`` adds keys to the manifest's ``source`` (the simple layout's).
    """
    options = plan["options"]
    image_size = options["image_size"]
    sources, nsd_ids = _unique_images(layout)
    shape = (int(nsd_ids.size), image_size, image_size, 3)
    # the fMRI first: values it refuses (NaN, beyond the dtype's range) stop before any image
    dtype = _FMRI_DTYPES[options["fmri_dtype"]]
    copy_store_fmri(layout, store / "fmri", dtype, options["nan_policy"])
    _decode_images(store, shape, [str(sources[int(n)]) for n in nsd_ids], workers, progress)
    subjects = subject_records(layout, nsd_ids, options)
    space = GroupSpace.from_masks({n: s.masks for n, s in layout.subjects.items()})
    with atomic_path(store / "space.npz", suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **space.to_arrays())
    manifest = {
        "format": "brainencoder-store",
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "source": {
            "root": str(Path(data_root).absolute()),
            "fingerprint": plan["fingerprint"],
            **(source or {}),
        },
        "options": options,
        "images": {"file": "images.u8", "shape": list(shape), "nsd_ids": nsd_ids.tolist()},
        "subjects": subjects,
        "space": "space.npz",
    }
    write_json_atomic(store / "manifest.json", manifest)
    shutil.rmtree(store / "chunks", ignore_errors=True)


def _decode_images(
    store: Path, shape: tuple, paths: list[str], workers: int | None, progress: bool | None
) -> None:
    """Decode ``paths`` into ``STORE/images.u8`` in worker processes (resuming from markers)."""
    from tqdm.auto import tqdm

    images_file, chunk_dir = store / "images.u8", store / "chunks"
    if not images_file.exists() or images_file.stat().st_size != int(np.prod(shape)):
        with atomic_path(images_file) as tmp, open(tmp, "wb") as fh:
            fh.truncate(int(np.prod(shape)))
        shutil.rmtree(chunk_dir, ignore_errors=True)
    chunk_dir.mkdir(exist_ok=True)
    todo = [s for s in range(0, shape[0], _CHUNK) if not (chunk_dir / f"{s:08d}.done").exists()]
    logger.info("decoding %d images (%d chunks to do) into %s", shape[0], len(todo), store)
    done = shape[0] - sum(min(_CHUNK, shape[0] - s) for s in todo)
    off = None if progress is None else not progress
    bar = tqdm(total=shape[0], initial=done, unit="img", desc="prepare images", disable=off)
    with worker_pool(workers) as pool, stop_workers_on_signal(pool, "prepare"):
        futures = [
            pool.submit(
                _decode_chunk,
                str(images_file),
                shape,
                s,
                paths[s : s + _CHUNK],
                str(chunk_dir / f"{s:08d}.done"),
            )
            for s in todo
        ]
        _sync_while_decoding(images_file, futures, bar)
    bar.close()


def _sync_while_decoding(images_file: Path, futures: list, bar) -> None:
    """Wait for the chunks; flush written ones meanwhile, so the last fsync has little to do."""
    with open(images_file, "rb+") as fh, ThreadPoolExecutor(1) as syncer:
        pending = []
        for i, fut in enumerate(futures):
            bar.update(fut.result())
            if i % 8 == 7:
                pending.append(syncer.submit(os.fsync, fh.fileno()))
        for job in pending:
            job.result()
        os.fsync(fh.fileno())
