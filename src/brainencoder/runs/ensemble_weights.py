"""How an ensemble's members are weighted on validation: per vertex, per ROI, stacked, best.

:func:`~brainencoder.runs.ensemble.val_weights` scores the members on the
store's val split and calls one of the schemes here; each returns, per
subject, an array of shape (n_models, n_lh + n_rh) whose columns sum to 1
(what :func:`~brainencoder.inference.images.average_predictions` takes).

* ``vertex``: ``max(r, 0) ** power`` of every member at every vertex, normalised;
* ``roi``: the same, averaged over the vertices of each ROI of the data's ROI
  groups (a vertex takes the first group that labels it; vertices in no ROI
  are pooled together), so a few noisy val images weigh whole regions;
* ``stack``: per ROI, non-negative least squares of the (per vertex
  standardised) val responses on the members' predictions, normalised;
* ``best``: every vertex takes the member with the highest val r.

Where no member has a positive score the weights are uniform.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..inference.store import predict_store_rows

__all__ = [
    "WEIGHTINGS",
    "best_member",
    "normalize",
    "per_region",
    "region_labels",
    "stack_subject",
    "stacked",
]

#: the values of ``val_weights(by=...)``
WEIGHTINGS = ("vertex", "roi", "stack", "best")


def normalize(raw: np.ndarray) -> np.ndarray:
    """Columns summing to 1; uniform where a column's total is not positive.

    Parameters
    ----------
    raw : ndarray of shape (n_models, n_vertices), non-negative

    Returns
    -------
    ndarray of float64, shape (n_models, n_vertices)
    """
    total = raw.sum(0)
    uniform = np.full_like(raw, 1.0 / raw.shape[0], dtype=np.float64)
    return np.where(total > 0, raw / np.where(total > 0, total, 1), uniform)


def region_labels(roi_masks: Sequence[np.ndarray], n_vertices: int) -> np.ndarray:
    """One region per vertex: the first mask that holds it (1-based), 0 for none.

    Parameters
    ----------
    roi_masks : sequence of ndarray of bool, shape (n_vertices,)
        In priority order (a subject's ROI groups in order, labels increasing).
    n_vertices : int

    Returns
    -------
    ndarray of int64, shape (n_vertices,)
    """
    labels = np.zeros(n_vertices, np.int64)
    for k, mask in enumerate(roi_masks, start=1):
        labels[(labels == 0) & mask] = k
    return labels


def per_region(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each member's score averaged over each region's vertices, spread back to them.

    Parameters
    ----------
    scores : ndarray of shape (n_models, n_vertices)
        E.g. ``max(r_val, 0) ** power``.
    labels : ndarray of int, shape (n_vertices,)
        Region of every vertex (:func:`region_labels`).

    Returns
    -------
    ndarray of shape (n_models, n_vertices)
        Normalised weights, equal within a region.
    """
    out = np.empty_like(scores, dtype=np.float64)
    for k in np.unique(labels):
        sel = labels == k
        out[:, sel] = scores[:, sel].mean(1, keepdims=True)
    return normalize(out)


def best_member(r: np.ndarray) -> np.ndarray:
    """One-hot weights of the member with the highest val r at each vertex.

    Parameters
    ----------
    r : ndarray of shape (n_models, n_vertices)

    Returns
    -------
    ndarray of float64, shape (n_models, n_vertices)
        Uniform where no member's r is positive (or r is NaN everywhere).
    """
    r = np.nan_to_num(r, nan=-np.inf)
    out = np.zeros(r.shape, np.float64)
    out[np.argmax(r, 0), np.arange(r.shape[1])] = 1.0
    return np.where((r > 0).any(0), out, 1.0 / r.shape[0])


def stacked(preds: np.ndarray, target: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per region, non-negative least-squares weights of the members, normalised.

    Every vertex's predictions and responses are centred and divided by the
    response's standard deviation, so each vertex of a region counts the same
    and the weights fit the correlation that the challenge scores.

    Parameters
    ----------
    preds : ndarray of shape (n_models, n_images, n_vertices)
        The members' val predictions.
    target : ndarray of shape (n_images, n_vertices)
        The val responses.
    labels : ndarray of int, shape (n_vertices,)

    Returns
    -------
    ndarray of float64, shape (n_models, n_vertices)
    """
    from scipy.optimize import nnls

    p = preds - preds.mean(1, keepdims=True)
    t = target - target.mean(0, keepdims=True)
    scale = t.std(0)
    scale = np.where(scale > 0, scale, 1.0)
    p, t = p / scale, t / scale
    out = np.zeros((preds.shape[0], preds.shape[2]), np.float64)
    for k in np.unique(labels):
        sel = labels == k
        design = p[:, :, sel].reshape(p.shape[0], -1).T.astype(np.float64)
        coef, _ = nnls(design, t[:, sel].reshape(-1).astype(np.float64))
        out[:, sel] = coef[:, None]
    return normalize(out)


def stack_subject(models: Sequence, store: Any, name: str, labels: np.ndarray) -> np.ndarray:
    """Stacking weights of one subject from every model's predictions of its val rows.

    Parameters
    ----------
    models : sequence of models
        Each with ``predict(images, subject)``.
    store : Store
    name : str
        The subject.
    labels : ndarray of int, shape (n_vertices,)
        The region of every vertex (:func:`region_labels`).

    Returns
    -------
    ndarray of shape (n_models, n_vertices)
        Weights summing to 1 over models at each vertex (:func:`stacked`).
    """
    rows = store.split_rows(name, "val")
    preds = np.empty((len(models), rows.size, labels.size), np.float32)
    for m, model in enumerate(models):
        for pos, pred in predict_store_rows(model, store, name, rows):
            preds[m, pos] = pred
    return stacked(preds, store.read_fmri(name, rows), labels)
