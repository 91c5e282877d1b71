"""``explore`` over an ensemble: each ranked image's interval for the ROI mean, and separability.

With several runs, ``explore`` ranks images by the members' mean prediction;
with a calibrated interval (``brainencoder calibrate``), every image also gets
the interval of its ROI score: the mean over the ROI's vertices of their
lower and upper bounds (for a contrast A - B: A's lower mean minus B's upper
mean, and the reverse). Where the interval of a rank overlaps the next
rank's, the two are not separable at that level.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..inference.conformal import member_spread

__all__ = ["Ensemble", "ensemble_scores", "separability"]


@dataclass(frozen=True)
class Ensemble:
    """Runs :func:`~brainencoder.experiments.explore.explore` ranks by as one model.

    Attributes
    ----------
    runs : sequence of path
        Run folders or model files (the first names the data and the cache).
    interval : float, optional
        Give each ranked image the interval of this level for its ROI score
        (``brainencoder calibrate`` first).
    calibration : path, optional
        The calibration file (default: the one beside the first run).
    """

    runs: Sequence[str | Path]
    interval: float | None = None
    calibration: str | Path | None = None


def ensemble_scores(
    values: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    calibrated: tuple | None = None,
    rows: int = 4096,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Per image: the ROI score of the members' mean, and its interval; the mean prediction.

    Parameters
    ----------
    values : sequence of ndarray, shape (n_images, n_columns)
        Each member's predictions of one subject (memory-mapped caches: read
        ``rows`` images at a time).
    masks : sequence of 1 or 2 boolean ndarray, shape (n_columns,)
        The ROI (and the ROI subtracted).
    calibrated : (Calibration, subject, level), optional
    rows : int, default=4096

    Returns
    -------
    score : ndarray of shape (n_images,)
    mean : ndarray of shape (n_columns,)
        The mean prediction over images.
    lower, upper : ndarray of shape (n_images,) or None
    """
    n = values[0].shape[0]
    score, total = np.empty(n), np.zeros(values[0].shape[1])
    lower = upper = None
    if calibrated is not None:
        lower, upper = np.empty(n), np.empty(n)
    for start in range(0, n, rows):
        block = [np.asarray(v[start : start + rows], dtype=np.float64) for v in values]
        mean, sd = member_spread(block)
        part = _roi(mean, mean, masks)
        score[start : start + rows] = part
        total += mean.sum(0)
        if calibrated is not None:
            cal, subject, level = calibrated
            lo, hi = cal.interval(subject, mean, sd, level)
            lower[start : start + rows] = _roi(lo, hi, masks)
            upper[start : start + rows] = _roi(hi, lo, masks)
    return score, total / n, lower, upper


def _roi(first: np.ndarray, second: np.ndarray, masks: Sequence[np.ndarray]) -> np.ndarray:
    """Mean of ``first`` over ROI 1, minus the mean of ``second`` over ROI 2 if given."""
    out = first[:, masks[0]].mean(1)
    return out - second[:, masks[1]].mean(1) if len(masks) == 2 else out


def separability(
    lower: np.ndarray, upper: np.ndarray, order: np.ndarray, top: int, level: float
) -> tuple[np.ndarray, str]:
    """Which ranks are separable from the next, and a sentence about the top ``top``.

    Parameters
    ----------
    lower, upper : ndarray of shape (n_images,)
        Each image's interval of its score.
    order : ndarray of int, shape (n_images,)
        Images from the highest score to the lowest.
    top : int
    level : float

    Returns
    -------
    separable : ndarray of bool, shape (n_images,)
        In rank order: whether the rank's lower bound is above the next rank's
        upper bound (the last rank: False).
    text : str
    """
    lo, hi = lower[order], upper[order]
    separable = np.zeros(order.size, dtype=bool)
    separable[:-1] = lo[:-1] > hi[1:]
    pct = f"{100 * level:g}%"
    if order.size <= top:
        return separable, f"Intervals are {pct} intervals of the ROI score."
    rest = hi[top:].max()
    clear = [r + 1 for r in range(top) if lo[r] > rest]
    tied = [r + 1 for r in range(top - 1) if not separable[r]]
    text = (
        f"At {pct}: of the top {top}, ranks {', '.join(map(str, clear))} are separable from "
        f"every image ranked below {top}"
        if clear
        else f"At {pct}, none of the top {top} is separable from every image ranked below {top}"
    )
    if tied:
        text += f"; ranks not separable from the next: {', '.join(map(str, tied))}"
    return separable, text + "."
