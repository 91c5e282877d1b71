"""Ridge regression with per-target (per-vertex) alpha chosen by cross-validation.

:func:`ridge_cv` is this package's solver: per fold, one thin SVD of the
training features serves every alpha and every vertex; the held-out error of
all (alpha, vertex) pairs follows from a few matrix products. Alphas are
chosen as himalaya's ``RidgeCV`` does (contiguous K folds, score = mean over
folds of the negative mean squared error, ties to the first alpha), so the two
agree; a test checks it. With many more samples than features this is several
times faster than himalaya on a CPU (``benchmarks/ridge_speed.py``).

Solvers are registered in :data:`RIDGE_SOLVERS` under the names the ridge
baseline's ``solver`` takes: ``torch`` (:func:`ridge_cv`), ``himalaya``,
``sklearn`` and ``ols``; a plugin registers its own with
``@RIDGE_SOLVERS.register("name")`` on a function ``(X, Y, alphas, n_folds) -> RidgeFit``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from ..util.registry import Registry

__all__ = [
    "RIDGE_SOLVERS",
    "RidgeFit",
    "RidgeSolver",
    "himalaya_ridge_cv",
    "ols",
    "ols_solver",
    "ridge_cv",
    "sklearn_ridge_cv",
]


@dataclass
class RidgeFit:
    """Result of :func:`ridge_cv`.

    Attributes
    ----------
    coef : ndarray of shape (n_features, n_targets)
    intercept : ndarray of shape (n_targets,)
    alphas : ndarray of shape (n_targets,)
        Selected alpha per target.
    cv_scores : ndarray of shape (n_targets,)
        Mean over folds of the negative MSE at the selected alpha.
    """

    coef: np.ndarray
    intercept: np.ndarray
    alphas: np.ndarray
    cv_scores: np.ndarray

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions, shape (n_samples, n_targets)."""
        return np.asarray(X, dtype=np.float32) @ self.coef + self.intercept


class RidgeSolver(Protocol):
    """``solver(X (n_samples, n_features), Y (n_samples, n_targets), alphas, n_folds)``."""

    def __call__(
        self, X: np.ndarray, Y: np.ndarray, alphas: np.ndarray, n_folds: int
    ) -> RidgeFit: ...


#: ridge solvers by name (the ridge baseline's ``solver``)
RIDGE_SOLVERS: Registry[RidgeSolver] = Registry("ridge solver")


def _svd(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    u, s, vt = torch.linalg.svd(x, full_matrices=False)
    return u, s, vt.t()


def ridge_cv(
    X: np.ndarray,
    Y: np.ndarray,
    alphas: np.ndarray,
    n_folds: int = 5,
    target_batch: int = 8192,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> RidgeFit:
    """Ridge with a per-target alpha chosen by K-fold cross-validation.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    Y : array-like of shape (n_samples, n_targets)
    alphas : array-like of shape (n_alphas,)
    n_folds : int, default=5
        Contiguous folds (scikit-learn ``KFold`` without shuffling).
    target_batch : int, default=8192
        Targets processed at a time (memory).
    dtype : torch.dtype, default=torch.float64
    device : str or torch.device, default="cpu"

    Returns
    -------
    RidgeFit
    """
    from sklearn.model_selection import KFold

    x = torch.as_tensor(np.asarray(X), dtype=dtype, device=device)
    alphas_t = torch.as_tensor(np.asarray(alphas, dtype=np.float64), dtype=dtype, device=device)
    n, _ = x.shape
    n_targets = np.shape(Y)[1]
    scores = torch.zeros(len(alphas_t), n_targets, dtype=dtype, device=device)
    folds = list(KFold(n_folds).split(np.arange(n)))
    for train, test in folds:
        xtr, xte = x[train], x[test]
        mean_x = xtr.mean(0)
        u, s, v = _svd(xtr - mean_x)
        xte_v = (xte - mean_x) @ v  # (n_test, k)
        shrink = s[None, :] / (s[None, :] ** 2 + alphas_t[:, None])  # (n_alphas, k)
        for start in range(0, n_targets, target_batch):
            y = torch.as_tensor(
                np.asarray(Y[:, start : start + target_batch]), dtype=dtype, device=device
            )
            ytr, yte = y[train], y[test]
            mean_y = ytr.mean(0)
            uty = u.t() @ (ytr - mean_y)  # (k, t)
            for a in range(len(alphas_t)):
                pred = (xte_v * shrink[a]) @ uty + mean_y
                scores[a, start : start + y.shape[1]] -= ((yte - pred) ** 2).mean(0) / n_folds
    best = scores.argmax(0)  # first best on ties, as himalaya
    mean_x = x.mean(0)
    u, s, v = _svd(x - mean_x)
    coef = torch.zeros(x.shape[1], n_targets, dtype=dtype, device=device)
    intercept = torch.zeros(n_targets, dtype=dtype, device=device)
    for a in torch.unique(best).tolist():
        cols = torch.nonzero(best == a).flatten()
        for start in range(0, cols.numel(), target_batch):
            c = cols[start : start + target_batch]
            y = torch.as_tensor(np.asarray(Y)[:, c.cpu().numpy()], dtype=dtype, device=device)
            mean_y = y.mean(0)
            w = v @ ((s / (s**2 + alphas_t[a]))[:, None] * (u.t() @ (y - mean_y)))
            coef[:, c] = w
            intercept[c] = mean_y - mean_x @ w
    return RidgeFit(
        coef=coef.float().cpu().numpy(),
        intercept=intercept.float().cpu().numpy(),
        alphas=alphas_t[best].cpu().numpy(),
        cv_scores=scores.gather(0, best[None]).squeeze(0).cpu().numpy(),
    )


def ols(X: np.ndarray, Y: np.ndarray) -> RidgeFit:
    """Ordinary least squares with intercept (the devkit baseline's regression)."""
    x = np.asarray(X, dtype=np.float64)
    y = np.asarray(Y, dtype=np.float64)
    mx, my = x.mean(0), y.mean(0)
    coef, *_ = np.linalg.lstsq(x - mx, y - my, rcond=None)
    return RidgeFit(
        coef.astype(np.float32),
        (my - mx @ coef).astype(np.float32),
        np.zeros(y.shape[1]),
        np.zeros(y.shape[1]),
    )


RIDGE_SOLVERS.register("torch", ridge_cv)


@RIDGE_SOLVERS.register("ols")
def ols_solver(X: np.ndarray, Y: np.ndarray, alphas: np.ndarray, n_folds: int = 5) -> RidgeFit:
    """:func:`ols` as a ridge solver (``alphas`` and ``n_folds`` are not used)."""
    return ols(X, Y)


@RIDGE_SOLVERS.register("himalaya")
def himalaya_ridge_cv(
    X: np.ndarray, Y: np.ndarray, alphas: np.ndarray, n_folds: int = 5
) -> RidgeFit:
    """himalaya's ``RidgeCV`` (K contiguous folds, an alpha per target).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    Y : array-like of shape (n_samples, n_targets)
    alphas : array-like of shape (n_alphas,)
    n_folds : int, default=5

    Returns
    -------
    RidgeFit
    """
    from himalaya.ridge import RidgeCV

    model = RidgeCV(alphas=alphas, cv=n_folds, fit_intercept=True).fit(X, Y)
    return RidgeFit(
        np.asarray(model.coef_, np.float32),
        np.asarray(model.intercept_, np.float32),
        np.asarray(model.best_alphas_),
        np.asarray(model.cv_scores_),
    )


@RIDGE_SOLVERS.register("sklearn")
def sklearn_ridge_cv(
    X: np.ndarray, Y: np.ndarray, alphas: np.ndarray, n_folds: int = 5
) -> RidgeFit:
    """scikit-learn's ``RidgeCV`` with an alpha per target, by efficient leave-one-out CV.

    scikit-learn allows no K-fold with ``alpha_per_target``, so ``n_folds`` is
    not used; ``cv_scores`` are zeros. Shapes as :func:`himalaya_ridge_cv`.
    """
    from sklearn.linear_model import RidgeCV

    model = RidgeCV(alphas=alphas, alpha_per_target=True).fit(X, Y)
    alpha = np.broadcast_to(np.asarray(model.alpha_, dtype=np.float64), (Y.shape[1],))
    return RidgeFit(
        model.coef_.T.astype(np.float32),
        np.asarray(model.intercept_, np.float32),
        np.array(alpha),
        np.zeros(Y.shape[1]),
    )
