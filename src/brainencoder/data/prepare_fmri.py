"""The per-subject part of ``prepare``: fMRI copied into the store, checked; manifest records.

Each subject's training fMRI (challenge layout) is copied, checked, into
``STORE/fmri``; its record in the manifest holds its counts, image rows and splits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..util.errors import DataError
from ..util.fileio import atomic_path
from .layout import HEMIS, DatasetLayout
from .splits import make_image_splits, make_splits

__all__ = ["copy_fmri", "copy_store_fmri", "subject_records"]


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


def copy_fmri(layout: DatasetLayout, name: str, path: Path, dtype: type, nan_policy: str) -> None:
    """Write subject ``name``'s training fMRI, lh then rh columns, into ``path`` (atomically).

    Parameters
    ----------
    layout : DatasetLayout
    name : str
    path : Path
        The store's ``fmri/subjXX.npy``: ``dtype`` (n_train, n_lh + n_rh).
    dtype : type
        ``numpy.float32`` or ``numpy.float16``.
    nan_policy : {"error", "zero"}
        NaN / inf: an error naming the file and row, or 0.

    Raises
    ------
    DataError
        Non-numeric values, values beyond ``dtype``'s range, or NaN / inf under "error".
    """
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


def copy_store_fmri(layout: DatasetLayout, folder: Path, dtype: type, nan_policy: str) -> None:
    """:func:`copy_fmri` of every subject of ``layout`` not yet in ``folder`` (``STORE/fmri``)."""
    folder.mkdir(exist_ok=True)
    for name in layout.names:
        path = folder / f"{name}.npy"
        if not path.exists():
            copy_fmri(layout, name, path, dtype, nan_policy)


def subject_records(layout: DatasetLayout, nsd_ids: np.ndarray, options: dict) -> dict:
    """The manifest's ``subjects``: counts, NSD ids, store image rows and splits of each."""
    split_fractions, split_seed = tuple(options["split_fractions"]), options["split_seed"]
    if options["split_mode"] == "image":
        all_splits = make_image_splits(
            {n: s.nsd_train for n, s in layout.subjects.items()}, split_fractions, split_seed
        )
    subjects_info = {}
    for name, subj in layout.subjects.items():
        if options["split_mode"] == "image":
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
    return subjects_info
