"""The noise ceiling of trial-averaged responses, computed as the Natural Scenes Dataset does.

The NSD papers and data manual (Allen et al. 2022, "A massive 7T fMRI dataset
to bridge cognitive neuroscience and artificial intelligence", Nature
Neuroscience 25:116-126, Methods "Noise ceiling"; NSD Data Manual, section
"ncsnr") estimate, per voxel or vertex, how much of the variance of a
trial-averaged response an ideal model could explain:

1. Betas are z-scored within each scan session (every trial of the session,
   per vertex), so the variance of a single trial is 1.
2. The noise variance is the variance across an image's repeated trials
   (ddof 1), averaged over the images shown two or more times:
   ``sigma_noise**2``.
3. The signal variance is what is left: ``sigma_signal**2 = max(0, 1 - sigma_noise**2)``.
4. The noise-ceiling signal-to-noise ratio is ``ncsnr = sigma_signal / sigma_noise``.
5. For responses averaged over ``n`` trials, the noise ceiling (the fraction
   of their variance the signal explains) is ``NC = ncsnr**2 / (ncsnr**2 + 1 / n)``.
   NSD reports ``100 * NC`` (percent). For a set whose images were averaged
   over different numbers of trials (``A`` images of 3, ``B`` of 2, ``C`` of 1),
   ``1 / n`` becomes ``(A / 3 + B / 2 + C / 1) / (A + B + C)``, the mean of ``1 / n_i``.

The Algonauts 2023 challenge's noise ceilings were made this way, as
fractions (see :func:`brainencoder.core.metrics.noise_normalized_score`).
:func:`estimate_ncsnr` does it in memory; the pieces
(:class:`SessionMoments`, :func:`zscore_sessions`, :func:`within_image_variance`,
:func:`ncsnr_from_noise_variance`) let a caller stream trials in blocks.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "SessionMoments",
    "estimate_ncsnr",
    "mean_inverse_trials",
    "ncsnr_from_noise_variance",
    "noise_ceiling",
    "within_image_variance",
    "zscore_sessions",
]


@dataclass
class SessionMoments:
    """Running per-session sums of trial responses, for z-scoring within sessions.

    Parameters
    ----------
    n_vertices : int
    """

    n_vertices: int
    sums: dict[Hashable, tuple[int, np.ndarray, np.ndarray]] = field(default_factory=dict)

    def update(self, values: np.ndarray, sessions: Sequence[Hashable]) -> None:
        """Add trials.

        Parameters
        ----------
        values : ndarray of shape (n_trials, n_vertices)
        sessions : sequence of length n_trials
            The session of each trial (any hashable label).
        """
        values = np.asarray(values, dtype=np.float64)
        labels = np.asarray(sessions, dtype=object)
        for session in dict.fromkeys(labels.tolist()):
            part = values[labels == session]
            n, s, ss = self.sums.get(session, (0, 0.0, 0.0))
            self.sums[session] = (n + part.shape[0], s + part.sum(0), ss + (part**2).sum(0))

    def stats(self) -> dict[Hashable, tuple[np.ndarray, np.ndarray]]:
        """Per session, the mean and standard deviation (ddof 0), each of shape (n_vertices,)."""
        out = {}
        for session, (n, s, ss) in self.sums.items():
            mean = s / n
            out[session] = (mean, np.sqrt(np.maximum(ss / n - mean**2, 0.0)))
        return out


def zscore_sessions(
    values: np.ndarray,
    sessions: Sequence[Hashable],
    stats: Mapping[Hashable, tuple[np.ndarray, np.ndarray]],
) -> np.ndarray:
    """Trials z-scored with their session's mean and standard deviation.

    Parameters
    ----------
    values : ndarray of shape (n_trials, n_vertices)
    sessions : sequence of length n_trials
    stats : mapping of session to (mean, sd), each of shape (n_vertices,)
        From :meth:`SessionMoments.stats`.

    Returns
    -------
    ndarray of float64, shape (n_trials, n_vertices)
        0 where a vertex is constant within the session.
    """
    out = np.asarray(values, dtype=np.float64).copy()
    labels = np.asarray(sessions, dtype=object)
    for session in dict.fromkeys(labels.tolist()):
        rows = labels == session
        mean, sd = stats[session]
        with np.errstate(divide="ignore", invalid="ignore"):
            out[rows] = np.where(sd > 0, (out[rows] - mean) / sd, 0.0)
    return out


def within_image_variance(z: np.ndarray, images: Sequence[Hashable]) -> tuple[np.ndarray, int]:
    """Sum over images with two or more trials of the variance across their trials.

    Parameters
    ----------
    z : ndarray of shape (n_trials, n_vertices)
        z-scored trials; every trial of an image must be among them.
    images : sequence of length n_trials
        The image of each trial.

    Returns
    -------
    sum_var : ndarray of float64, shape (n_vertices,)
        Sum of the per-image variances (ddof 1).
    n_images : int
        How many images had two or more trials (the count to divide by).
    """
    z = np.asarray(z, dtype=np.float64)
    _, inverse = np.unique(np.asarray(images, dtype=object).astype(str), return_inverse=True)
    order = np.argsort(inverse.ravel(), kind="stable")
    labels = inverse.ravel()[order]
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    counts = np.diff(np.r_[starts, labels.size])
    repeated = counts >= 2
    if not repeated.any():
        return np.zeros(z.shape[1]), 0
    sums = np.add.reduceat(z[order], starts, axis=0)[repeated]
    squares = np.add.reduceat(z[order] ** 2, starts, axis=0)[repeated]
    n = counts[repeated, None].astype(np.float64)
    var = (squares - sums**2 / n) / (n - 1)
    return np.maximum(var, 0.0).sum(0), int(repeated.sum())


def ncsnr_from_noise_variance(noise_var: np.ndarray) -> np.ndarray:
    """``sqrt(max(0, 1 - noise_var)) / sqrt(noise_var)``, per vertex.

    Parameters
    ----------
    noise_var : ndarray of shape (n_vertices,)
        Noise variance of z-scored single trials.

    Returns
    -------
    ndarray of shape (n_vertices,)
        ``inf`` where the noise variance is 0 (repeats identical), 0 where it is 1 or more.
    """
    noise_var = np.asarray(noise_var, dtype=np.float64)
    signal = np.sqrt(np.maximum(0.0, 1.0 - noise_var))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(noise_var > 0, signal / np.sqrt(noise_var), np.inf)


def mean_inverse_trials(n_trials: int | Sequence[int] | np.ndarray) -> float:
    """The ``1 / n`` of a set of images averaged over ``n_trials`` each: the mean of ``1 / n_i``.

    Parameters
    ----------
    n_trials : int or array-like of int, shape (n_images,)

    Returns
    -------
    float
    """
    n = np.atleast_1d(np.asarray(n_trials, dtype=np.float64))
    if n.size == 0 or (n < 1).any():
        raise ValueError(f"trial counts must be 1 or more, for at least one image; got {n_trials}")
    return float(np.mean(1.0 / n))


def noise_ceiling(ncsnr: np.ndarray, n_trials: int | Sequence[int] | np.ndarray) -> np.ndarray:
    """The noise ceiling of responses averaged over ``n_trials``, as a fraction.

    Parameters
    ----------
    ncsnr : ndarray of shape (n_vertices,)
        From :func:`estimate_ncsnr` or :func:`ncsnr_from_noise_variance`.
    n_trials : int or array-like of int, shape (n_images,)
        Trials averaged into each response: one number for all images, or
        one per image of the set (then ``1 / n`` is their mean of ``1 / n_i``).

    Returns
    -------
    ndarray of float64, shape (n_vertices,)
        ``ncsnr**2 / (ncsnr**2 + 1 / n)`` in [0, 1] (NSD's NC in percent is 100 times this).
    """
    snr2 = np.asarray(ncsnr, dtype=np.float64) ** 2
    inv_n = mean_inverse_trials(n_trials)
    with np.errstate(invalid="ignore"):
        return np.where(np.isinf(snr2), 1.0, snr2 / (snr2 + inv_n))


def estimate_ncsnr(
    responses: np.ndarray,
    images: Sequence[Hashable],
    sessions: Sequence[Hashable] | None = None,
) -> np.ndarray:
    """The ncsnr of every vertex from single-trial responses (in memory).

    Parameters
    ----------
    responses : ndarray of shape (n_trials, n_vertices)
        One row per trial (betas).
    images : sequence of length n_trials
        The image of each trial; images shown two or more times give the noise.
    sessions : sequence of length n_trials, optional
        The scan session of each trial (z-scoring is within session); default one session.

    Returns
    -------
    ndarray of shape (n_vertices,)

    Raises
    ------
    ValueError
        If no image has two or more trials.
    """
    responses = np.asarray(responses, dtype=np.float64)
    sessions = [0] * responses.shape[0] if sessions is None else sessions
    moments = SessionMoments(responses.shape[1])
    moments.update(responses, sessions)
    z = zscore_sessions(responses, sessions, moments.stats())
    total, n_images = within_image_variance(z, images)
    if n_images == 0:
        raise ValueError("no image has two or more trials: the noise variance is unknown")
    return ncsnr_from_noise_variance(total / n_images)
