"""The statistics of ``compare``: per-vertex r over resampled images and their intervals."""

from __future__ import annotations

import numpy as np

__all__ = ["pearson_rows", "shifted_percentiles", "summary"]


def pearson_rows(pred: np.ndarray, target: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Per-vertex r over the images ``idx`` (a bootstrap sample), shape (n_vertices,)."""
    p, t = pred[idx], target[idx]
    p = p - p.mean(0)
    t = t - t.mean(0)
    denom = np.sqrt((p * p).sum(0) * (t * t).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (p * t).sum(0) / denom, 0.0)


def summary(r: np.ndarray, nc: np.ndarray | None) -> dict[str, float]:
    """Mean r over vertices (and, with noise ceilings ``nc``, the mean challenge score)."""
    from ..core.metrics import noise_normalized_score

    out = {"pearson": float(np.mean(r))}
    if nc is not None:
        out["score"] = float(np.mean(noise_normalized_score(r, nc)))
    return out


def shifted_percentiles(diffs: np.ndarray, estimate: float, level: float = 0.95) -> np.ndarray:
    """The percentile interval of bootstrap ``diffs``, moved by their bias.

    A correlation over images resampled with replacement is biased: duplicated
    images raise ``r ** 2`` by about ``(1 - r ** 2) ** 2 / n_images``, more for
    a run of low r than for one of high r, so the resampled differences of two
    runs' scores are not centred on the difference itself (the plain percentile
    interval of a pixel ridge against an encoder missed its own estimate by
    several points). The interval is shifted by the bootstrap's estimate of
    that bias, ``mean(diffs) - estimate`` (Efron and Tibshirani 1993, ch. 10),
    so its width is the bootstrap's and it lies around the estimate.

    Parameters
    ----------
    diffs : ndarray of shape (n_boot,)
        The difference on each bootstrap sample.
    estimate : float
        The difference on all images.
    level : float, default=0.95

    Returns
    -------
    ndarray of shape (2,)
        Lower and upper bound.
    """
    tail = 100 * (1 - level) / 2
    bias = float(np.mean(diffs)) - estimate
    return np.percentile(diffs, [tail, 100 - tail]) - bias
