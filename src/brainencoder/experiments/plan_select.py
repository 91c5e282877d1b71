"""Choosing N of a pool's images from their features: the selection rules of ``plan``.

Every rule takes the pool's feature matrix (one row per image; ``plan`` gives
the principal components of the model's predicted responses) and returns N
distinct row indices in the order they were picked:

* ``dopt`` (the default): greedy D-optimal design: each step adds the image
  of largest leverage ``x' (lam I + X_S' X_S)^-1 x`` (``x``: the features and
  a constant for the offset), which maximises ``log det`` of the regularised
  information matrix of a linear readout;
* ``cover``: k-means with N centres (k-means++ start, seeded), and the image
  nearest each centre: N images that represent the pool's spread;
* ``kcenter``: farthest-point (k-centre greedy) from the image nearest the
  mean: N images as far apart as possible;
* ``disagreement``: the N images on which an ensemble's members disagree most;
* ``random``: a seeded random draw (the baseline).
"""

from __future__ import annotations

import numpy as np

__all__ = ["SELECTORS", "cover", "dopt", "kcenter", "principal_scores", "top_disagreement"]

#: the selection rules ``plan --method`` takes; the first is the default
SELECTORS = ("dopt", "cover", "kcenter", "disagreement", "random")


def principal_scores(x: np.ndarray, n_components: int) -> np.ndarray:
    """The rows' coordinates on the leading principal components of ``x``.

    Parameters
    ----------
    x : ndarray of shape (n_images, n_features)
    n_components : int

    Returns
    -------
    ndarray of float64, shape (n_images, k)
        ``k = min(n_components, n_images, n_features)``; centred, unscaled
        (each component keeps its variance).
    """
    x = np.asarray(x, np.float64)
    x = x - x.mean(0, keepdims=True)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    k = min(n_components, s.size)
    return u[:, :k] * s[:k]


def kcenter(z: np.ndarray, n: int) -> np.ndarray:
    """Farthest-point selection, starting at the row nearest the mean.

    Parameters
    ----------
    z : ndarray of shape (n_images, k)
    n : int
        At most ``n_images``.

    Returns
    -------
    ndarray of int64, shape (n,)
    """
    first = int(np.argmin(((z - z.mean(0)) ** 2).sum(1)))
    chosen = [first]
    dist = ((z - z[first]) ** 2).sum(1)
    for _ in range(n - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, ((z - z[nxt]) ** 2).sum(1))
    return np.asarray(chosen, np.int64)


def dopt(z: np.ndarray, n: int, ridge: float = 1.0) -> np.ndarray:
    """Greedy D-optimal selection (rank-one updates of the inverse information matrix).

    Parameters
    ----------
    z : ndarray of shape (n_images, k)
    n : int
        At most ``n_images``.
    ridge : float, default=1.0
        ``lam`` in units of the mean variance of the columns of ``z``.

    Returns
    -------
    ndarray of int64, shape (n,)
    """
    scale = max(float(z.var(0).mean()), 1e-12)
    lam = ridge * scale  # the readout's offset: a constant column on the scale of the others
    z = np.concatenate([z - z.mean(0), np.full((z.shape[0], 1), np.sqrt(scale))], 1)
    inv = np.eye(z.shape[1]) / lam
    taken = np.zeros(z.shape[0], bool)
    chosen = []
    for _ in range(n):
        az = z @ inv
        gain = np.where(taken, -np.inf, (az * z).sum(1))
        i = int(np.argmax(gain))
        chosen.append(i)
        taken[i] = True
        v = inv @ z[i]
        inv -= np.outer(v, v) / (1.0 + z[i] @ v)
    return np.asarray(chosen, np.int64)


def cover(z: np.ndarray, n: int, seed: int = 0, iterations: int = 25) -> np.ndarray:
    """The image nearest each of ``n`` k-means centres (distinct images).

    Parameters
    ----------
    z : ndarray of shape (n_images, k)
    n : int
        At most ``n_images``.
    seed : int, default=0
        The k-means++ start.
    iterations : int, default=25
        Lloyd iterations.

    Returns
    -------
    ndarray of int64, shape (n,)
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 23]))
    sq = (z**2).sum(1)
    centres = [z[rng.integers(z.shape[0])]]
    dist = ((z - centres[0]) ** 2).sum(1)
    for _ in range(n - 1):  # k-means++
        p = dist / dist.sum() if dist.sum() > 0 else None
        centres.append(z[rng.choice(z.shape[0], p=p)])
        dist = np.minimum(dist, ((z - centres[-1]) ** 2).sum(1))
    c = np.stack(centres)
    for _ in range(iterations):
        assign = np.argmin(sq[:, None] - 2 * z @ c.T + (c**2).sum(1)[None], 1)
        for j in range(n):
            members = assign == j
            if members.any():
                c[j] = z[members].mean(0)
    d = sq[:, None] - 2 * z @ c.T + (c**2).sum(1)[None]
    taken = np.zeros(z.shape[0], bool)
    chosen = []
    for j in np.argsort(d.min(0)):  # centres with a close image first
        order = np.argsort(d[:, j])
        i = int(order[~taken[order]][0])
        taken[i] = True
        chosen.append(i)
    return np.asarray(chosen, np.int64)


def top_disagreement(spread: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` rows of largest ensemble disagreement, largest first.

    Parameters
    ----------
    spread : ndarray of shape (n_images,)
        E.g. the members' variance of the prediction, averaged over vertices.
    n : int

    Returns
    -------
    ndarray of int64, shape (n,)
    """
    return np.argsort(-np.asarray(spread), kind="stable")[:n].astype(np.int64)
