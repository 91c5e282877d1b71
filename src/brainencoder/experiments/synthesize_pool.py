"""Every member's predictions of images for ``synthesize``: the images made and the pool.

A pool of natural images is predicted once per member and the whole response
(the subject's columns) is cached beside the member's run, as ``explore``
caches its predictions (``RUN/cache/synthesize/KEY.npy``, the key naming the
model file, the images and the subject), so another ROI, another contrast or
another run of ``synthesize`` over the same pool reads it back; an unwritable
run folder only costs the prediction again.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.layout import HEMIS
from ..util.errors import DataError
from ..util.fileio import atomic_path

__all__ = ["pool_scores", "predict_all", "roi_values"]

logger = logging.getLogger(__name__)


def roi_values(responses: np.ndarray, masks: Sequence[np.ndarray]) -> np.ndarray:
    """Mean over ROI A (minus the mean over ROI B) of responses (n, n_lh + n_rh), shape (n,)."""
    values = np.asarray(responses, dtype=np.float64)
    out = values[:, masks[0]].mean(1)
    return out - values[:, masks[1]].mean(1) if len(masks) == 2 else out


def _responses(model, images: np.ndarray, subject: str) -> np.ndarray:
    pred = model.predict(images, subject)
    return np.concatenate([pred[h] for h in HEMIS], 1)


def predict_all(members, images: np.ndarray, subject: str, masks) -> tuple:
    """Every member's ROI values of uint8 images (n, S, S, 3) and the ensemble's responses.

    Returns
    -------
    scores : ndarray of shape (n_members, n)
    responses : ndarray of float32, shape (n, n_lh + n_rh)
    """
    full = [_responses(m, images, subject) for m in members.models]
    scores = np.stack([roi_values(r, masks) for r in full])
    return scores, np.mean(full, axis=0, dtype=np.float64).astype(np.float32)


def _cache_file(path: Path | None, source, subject: str) -> Path | None:
    if path is None:
        return None
    st = path.stat()
    digest = hashlib.sha256(f"{source.key()}|{subject}|{path.resolve()}".encode())
    digest.update(f"{st.st_size}|{st.st_mtime_ns}".encode())
    return path.parent / "cache" / "synthesize" / f"{digest.hexdigest()[:20]}.npy"


def _cached(cache: Path | None, shape: tuple[int, int]) -> np.ndarray | None:
    if cache is None or not cache.is_file():
        return None
    try:
        values = np.load(cache, allow_pickle=False)
    except (OSError, ValueError):
        values = None
    if values is not None and values.shape == shape and values.dtype == np.float32:
        return values
    logger.warning("%s: unreadable pool prediction cache; predicting again", cache)
    return None


def _save(cache: Path | None, values: np.ndarray) -> None:
    if cache is None:
        return
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache, suffix=".npy") as tmp:
            np.save(tmp, values)
    except OSError as exc:
        logger.warning("cannot cache pool predictions in %s (%s)", cache.parent, exc)


def pool_scores(members, pool: str | Path, subject: str, masks, batch: int = 64) -> tuple:
    """Every member's ROI values of the pool's images, and the ensemble's mean response.

    The images are decoded once per batch, at the members' image size, as
    every prediction decodes them; a member's predictions cached beside its
    run are read back instead.

    Parameters
    ----------
    members : Members
    pool : path
        A folder of images, or a ``.npy`` / HDF5 array of uint8 images.
    subject : str
    masks : sequence of 1 or 2 ndarray of bool, shape (n_lh + n_rh,)
    batch : int, default=64

    Returns
    -------
    scores : ndarray of shape (n_members, n_pool)
    mean : ndarray of shape (n_lh + n_rh,)
    """
    from ..data.sources import open_images

    space = members.models[0].space
    n_cols = sum(space.n_subject_vertices(subject, h) for h in HEMIS)
    paths = members.paths or [None] * len(members.models)
    with open_images(pool) as source:
        if len(source) == 0:
            raise DataError(f"{pool}: the pool holds no image; give a folder or array of images")
        caches = [_cache_file(p, source, subject) for p in paths]
        full = [_cached(c, (len(source), n_cols)) for c in caches]
        todo = [k for k, values in enumerate(full) if values is None]
        for k in todo:
            full[k] = np.empty((len(source), n_cols), np.float32)
        for start in range(0, len(source) if todo else 0, batch):
            rows = range(start, min(start + batch, len(source)))
            images = np.stack([source.load(i, members.size) for i in rows])
            for k in todo:
                full[k][start : rows.stop] = _responses(members.models[k], images, subject)
        for k in todo:
            _save(caches[k], full[k])
    scores = np.stack([roi_values(values, masks) for values in full])
    mean = np.mean([values.mean(0, dtype=np.float64) for values in full], axis=0)
    return scores, mean
