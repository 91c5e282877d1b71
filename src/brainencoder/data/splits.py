"""Seeded train / val / testval splits: by image (default) or per subject.

By image, every NSD image falls in one split for all subjects who saw it, so
validation and test-val never score an image the shared model trained on
through another subject. Per subject (the original entry's way), each
subject's images are split on their own.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from ..util.errors import ConfigError

__all__ = ["SPLIT_MODES", "SPLIT_NAMES", "make_image_splits", "make_splits", "subsample"]

SPLIT_NAMES = ("train", "val", "testval")
SPLIT_MODES = ("image", "subject")


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(
            f"split fractions must be 3 non-negative numbers summing to 1; got {fractions}"
        )
    return fractions  # type: ignore[return-value]


def make_image_splits(
    image_ids: dict[str, np.ndarray],
    fractions: Sequence[float] = (0.85, 0.10, 0.05),
    seed: int = 0,
) -> dict[str, dict[str, np.ndarray]]:
    """Split by image: each image id is in the same split for every subject.

    The union of all subjects' image ids is permuted (seeded) and cut at the
    fractions; each subject's rows follow their image's split, so per-subject
    fractions are close to, not exactly, the requested ones.

    Parameters
    ----------
    image_ids : dict of str to ndarray of int64
        Per subject, the image id (NSD id) of each training row.
    fractions : sequence of 3 floats, default=(0.85, 0.10, 0.05)
    seed : int, default=0

    Returns
    -------
    dict of str to dict of str to ndarray of int64
        ``splits[subject][split]``: sorted row indices of that subject.

    Raises
    ------
    ConfigError
        When a subject ends up with an empty split (too few images for the
        fractions): use per-subject splits or more images.
    """
    fractions = _check_fractions(fractions)
    union = np.unique(np.concatenate([np.asarray(v, dtype=np.int64) for v in image_ids.values()]))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(b"images")]))
    perm = union[rng.permutation(union.size)]
    n_val = max(round(fractions[1] * union.size), 1 if fractions[1] > 0 else 0)
    n_testval = max(round(fractions[2] * union.size), 1 if fractions[2] > 0 else 0)
    n_train = union.size - n_val - n_testval
    label = np.empty(union.size, dtype=np.int64)
    for k, part in enumerate(np.split(perm, [n_train, n_train + n_val])):
        label[np.searchsorted(union, part)] = k
    # a subject whose val or testval came out small gets some of its train images moved
    # there (for every subject who saw them), so each split holds at least half its share
    # and 2 images (correlations need 2)
    positions = {
        n: np.searchsorted(union, np.asarray(v, dtype=np.int64)) for n, v in image_ids.items()
    }
    for k in (1, 2):
        if fractions[k] == 0:
            continue
        for pos in positions.values():
            need = max(2, int(np.ceil(0.5 * fractions[k] * pos.size)))
            have = int((label[pos] == k).sum())
            train = pos[label[pos] == 0]
            if have < need and train.size > need - have:
                label[rng.choice(train, size=need - have, replace=False)] = k
    out = {}
    for name, pos in positions.items():
        which = label[pos]
        out[name] = {s: np.flatnonzero(which == k) for k, s in enumerate(SPLIT_NAMES)}
        small = [s for s, f in zip(SPLIT_NAMES, fractions) if f > 0 and out[name][s].size < 2]
        if small:
            raise ConfigError(
                f"{name}: fewer than 2 {'/'.join(small)} images with image-consistent splits "
                f"of {pos.size} images; use per-subject splits (--split-mode subject) or more "
                "images"
            )
    return out


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
    fractions = _check_fractions(fractions)
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
