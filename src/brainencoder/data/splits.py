"""Seeded per-subject train / val / testval splits."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError

__all__ = ["SPLIT_NAMES", "make_splits", "subsample"]

SPLIT_NAMES = ("train", "val", "testval")


def make_splits(
    n_samples: int,
    fractions: Sequence[float] = (0.85, 0.10, 0.05),
    seed: int = 0,
    key: str = "",
) -> dict[str, np.ndarray]:
    """Split ``n_samples`` rows into train / val / testval at random.

    The permutation depends only on ``seed`` and ``key`` (use the subject
    name), so each subject gets its own stable split; seed 0 is a seed like
    any other.

    Parameters
    ----------
    n_samples : int
        Number of training images of the subject.
    fractions : sequence of 3 floats, default=(0.85, 0.10, 0.05)
        Fractions of train, val and testval; they must sum to 1.
    seed : int, default=0
    key : str, default=""
        Extra key mixed into the seed (the subject name).

    Returns
    -------
    dict of str to ndarray of int64
        Sorted row indices per split name; together they cover every row once.
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(
            f"split fractions must be 3 non-negative numbers summing to 1; got {fractions}"
        )
    if n_samples < 3:
        raise ConfigError(f"cannot split {n_samples} samples into train/val/testval")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(key.encode())]))
    perm = rng.permutation(n_samples)
    n_val = max(round(fractions[1] * n_samples), 1 if fractions[1] > 0 else 0)
    n_testval = max(round(fractions[2] * n_samples), 1 if fractions[2] > 0 else 0)
    n_train = n_samples - n_val - n_testval
    parts = np.split(perm, [n_train, n_train + n_val])
    return {name: np.sort(part).astype(np.int64) for name, part in zip(SPLIT_NAMES, parts)}


def subsample(rows: np.ndarray, fraction: float, seed: int = 0, key: str = "") -> np.ndarray:
    """A seeded random subset of ``rows`` (sorted), for learning curves.

    Parameters
    ----------
    rows : ndarray of int64
    fraction : float in (0, 1]
        Fraction kept (at least one row).
    seed : int, default=0
    key : str, default=""
        Mixed into the seed (the subject name).
    """
    if not 0 < fraction <= 1:
        raise ConfigError(f"'train_fraction' must be in (0, 1]; got {fraction}")
    if fraction == 1:
        return rows
    n = max(1, round(fraction * rows.size))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(key.encode()), 1]))
    return np.sort(rng.choice(rows, size=n, replace=False))
