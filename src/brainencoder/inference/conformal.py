"""Split-conformal prediction intervals from an ensemble's spread (the math, no files).

A calibration set holds responses ``y`` that no ensemble member trained on,
with the members' mean ``mu`` and spread ``sd`` at each (image, vertex). Its
rows are cut in two: the first part gives every vertex a scale ``a_v`` (the
root mean square of ``y - mu`` there), the second the normalized scores

    s = |y - mu| / (a_v + sd)

pooled over its rows and the subject's vertices. With ``n`` scores, the
interval of level ``1 - alpha`` is ``mu +- q (a_v + sd)``, ``q`` the
``ceil((n + 1)(1 - alpha))``-th smallest score (Lei et al. 2018; Barber et al.
2021): where the calibration rows are exchangeable with new images, the
interval covers the measured response with probability at least ``1 - alpha``
averaged over images and vertices. Vertices whose responses are noisier have
a larger ``a_v``, so their intervals are wider; where the members disagree
about an image, ``sd`` widens it there.
"""

from __future__ import annotations

import math

import numpy as np

from ..util.errors import DataError

__all__ = [
    "SCALE_FLOOR",
    "bounds",
    "conformal_rank",
    "coverage",
    "member_spread",
    "normalized_scores",
    "quantile_from_table",
    "quantile_table",
    "vertex_scale",
]

SCALE_FLOOR = 0.05  # a_v is at least this fraction of the subject's median a_v
_TABLE_SIZE = 4001  # order statistics kept of a subject's scores (all of them if fewer)


def member_spread(preds: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The members' mean and standard deviation (ddof 1; zero for one member).

    Parameters
    ----------
    preds : list of ndarray, each of shape (n_images, n_vertices)
        One prediction per member.

    Returns
    -------
    mean, sd : ndarray of float32, shape (n_images, n_vertices)
    """
    stack = np.stack([np.asarray(p, dtype=np.float64) for p in preds])
    mean = stack.mean(0)
    sd = stack.std(0, ddof=1) if len(preds) > 1 else np.zeros_like(mean)
    return mean.astype(np.float32), sd.astype(np.float32)


def vertex_scale(y: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Every vertex's scale ``a_v``: the root mean square of ``y - mean`` over rows, floored.

    Parameters
    ----------
    y, mean : ndarray, shape (n_rows, n_vertices)
        Measured responses and the ensemble's mean prediction.

    Returns
    -------
    ndarray of float32, shape (n_vertices,)
        At least :data:`SCALE_FLOOR` times the median over vertices (and > 0).
    """
    rms = np.sqrt(np.mean((np.asarray(y, np.float64) - mean) ** 2, axis=0))
    floor = max(SCALE_FLOOR * float(np.median(rms)), 1e-6)
    return np.maximum(rms, floor).astype(np.float32)


def normalized_scores(
    y: np.ndarray, mean: np.ndarray, sd: np.ndarray, scale: np.ndarray
) -> np.ndarray:
    """Conformity scores ``|y - mean| / (scale + sd)``.

    Parameters
    ----------
    y, mean, sd : ndarray, shape (n_rows, n_vertices)
    scale : ndarray, shape (n_vertices,)

    Returns
    -------
    ndarray of float64, shape (n_rows, n_vertices)
    """
    return np.abs(np.asarray(y, np.float64) - mean) / (scale[None, :] + sd)


def conformal_rank(n: int, level: float) -> int:
    """The (1-based) rank ``ceil((n + 1) level)`` of the conformal quantile among ``n`` scores.

    Raises
    ------
    DataError
        When ``level`` is not in (0, 1), or ``n`` scores are too few for it.
    """
    if not isinstance(level, (int, float)) or isinstance(level, bool) or not 0 < level < 1:
        raise DataError(f"interval level must be a number in (0, 1), e.g. 0.9; got {level!r}")
    rank = math.ceil((n + 1) * float(level) - 1e-9)
    if rank > n:
        raise DataError(
            f"a {level:.3g} interval needs at least {math.ceil(level / (1 - level))} calibration "
            f"scores; this calibration has {n}: calibrate on more held-out rows, or ask a "
            "lower level"
        )
    return max(rank, 1)


def quantile_table(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order statistics of ``scores`` to store: their ranks and values.

    All of them when there are at most 4,001; else 4,001 evenly spaced ranks
    (the first and the last included), so :func:`quantile_from_table` rounds a
    rank up to the next stored one (a slightly wider interval, never narrower).

    Returns
    -------
    ranks : ndarray of int64, shape (k,)
        1-based, increasing.
    values : ndarray of float64, shape (k,)
    """
    flat = np.sort(np.asarray(scores, np.float64).ravel())
    if flat.size <= _TABLE_SIZE:
        return np.arange(1, flat.size + 1, dtype=np.int64), flat
    ranks = np.unique(np.linspace(1, flat.size, _TABLE_SIZE).round().astype(np.int64))
    return ranks, flat[ranks - 1]


def quantile_from_table(ranks: np.ndarray, values: np.ndarray, n: int, level: float) -> float:
    """The conformal quantile of level ``level`` from a stored table of ``n`` scores.

    Parameters
    ----------
    ranks, values : ndarray, shape (k,)
        From :func:`quantile_table`.
    n : int
        How many scores the table summarizes.
    level : float
        In (0, 1).

    Returns
    -------
    float
        The score of the smallest stored rank at or above :func:`conformal_rank`.
    """
    rank = conformal_rank(n, level)
    pos = int(np.searchsorted(ranks, rank, side="left"))
    return float(values[min(pos, len(values) - 1)])


def bounds(
    mean: np.ndarray, sd: np.ndarray, scale: np.ndarray, q: float
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds ``mean -+ q (scale + sd)``.

    Parameters
    ----------
    mean, sd : ndarray, shape (n_images, n_vertices)
    scale : ndarray, shape (n_vertices,)
    q : float

    Returns
    -------
    lower, upper : ndarray of float32, shape (n_images, n_vertices)
    """
    half = q * (scale[None, :] + np.asarray(sd, np.float64))
    return (mean - half).astype(np.float32), (mean + half).astype(np.float32)


def coverage(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """The fraction of (image, vertex) pairs with ``lower <= y <= upper``."""
    return float(np.mean((y >= lower) & (y <= upper)))
