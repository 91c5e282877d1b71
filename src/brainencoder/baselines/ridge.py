"""Ridge baselines on frozen features: himalaya-style ridge and the devkit baseline.

``brainencoder baseline ridge`` fits, per subject, a linear map from image
features to every vertex on the store's train split, with a per-vertex alpha
chosen by 5-fold cross-validation (:func:`~brainencoder.models.solvers.ridge_cv`,
or himalaya's ``RidgeCV``, or scikit-learn's, or a solver a plugin registers in
:data:`~brainencoder.models.solvers.RIDGE_SOLVERS`: ``--solver NAME --plugin MODULE``).
``brainencoder baseline devkit`` is the official Algonauts 2023 tutorial's
model: PCA (100 components) of one layer's features and ordinary least squares.

Features (:class:`~brainencoder.models.extractor.FeatureSpec`, re-exported
here): downsampled pixels, or spatially pooled maps of chosen trunk layers
(mean over space, or a ``grid`` x ``grid`` average), optionally PCA-reduced.
A baseline run directory has the shape of an encoder run (``config.yaml``
naming the store, the model in ``ridge.safetensors``, ``summary.json``), so
``evaluate``, ``plot``, ``predict`` and ``submit`` work on it unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from ..data.splits import SPLIT_NAMES, subsample
from ..data.store import Store
from ..models.extractor import FeatureExtractor, FeatureSpec
from ..models.ridge import RidgeModel
from ..models.solvers import RIDGE_SOLVERS, ridge_cv
from ..runs.provenance import training_record
from ..runs.run import Run

__all__ = [
    "FeatureExtractor",
    "FeatureSpec",
    "RidgeModel",
    "RidgeOptions",
    "fit_ridge_baseline",
    "fit_subject_ridge",
]

logger = logging.getLogger(__name__)


def fit_subject_ridge(
    store: Store,
    subject: str,
    rows: np.ndarray,
    spec: FeatureSpec | None = None,
    alphas: np.ndarray | None = None,
    n_folds: int = 5,
) -> RidgeModel:
    """Per-vertex ridge (alpha by K-fold CV) of one subject on chosen training rows.

    The reference next to ``adapt``: the same images, the same random trunk
    (``FeatureSpec()`` is the tiny encoder's), one subject's data only.

    Parameters
    ----------
    store : Store
    subject : str
    rows : ndarray of int64
        Rows of the subject's training fMRI.
    spec : FeatureSpec, optional
    alphas : ndarray, optional
        Default ``logspace(-2, 6, 17)``.
    n_folds : int, default=5
    """
    extractor = FeatureExtractor(spec or FeatureSpec())
    info = store.subject(subject)
    x = extractor(store.read_images(info.train_rows[rows]))
    y = store.read_fmri(subject, rows)
    alphas = np.logspace(-2, 6, 17) if alphas is None else np.asarray(alphas, dtype=np.float64)
    fit = ridge_cv(x, y, alphas, n_folds)
    return RidgeModel(extractor, store.space, {subject: fit}, store.image_size)


@dataclasses.dataclass(frozen=True)
class RidgeOptions:
    """The solver of :func:`fit_ridge_baseline` and its alphas and folds.

    Attributes
    ----------
    solver : str, default="torch"
        A registered ridge solver (:data:`~brainencoder.models.solvers.RIDGE_SOLVERS`:
        "torch", "himalaya", "sklearn", "ols", or a plugin's).
    alphas : ndarray, optional
        Default ``np.logspace(-2, 6, 17)``.
    n_folds : int, default=5
    """

    solver: str = "torch"
    alphas: np.ndarray | list[float] | None = None
    n_folds: int = 5


def fit_ridge_baseline(
    store: Store,
    out: str | Path,
    spec: FeatureSpec | None = None,
    ridge: RidgeOptions | None = None,
    split: str = "train",
    overwrite: bool = False,
    train_fraction: float = 1.0,
    seed: int = 0,
) -> RidgeModel:
    """Fit a baseline on the store's split and write a run directory.

    Parameters
    ----------
    store : Store
    out : path
        Run directory (refused if it holds something, unless ``overwrite``).
    spec : FeatureSpec, optional
    ridge : RidgeOptions, optional
        Solver, alphas and folds; default ``RidgeOptions()`` (the torch solver).
    split : str, default="train"
        Rows to fit on (``"train"``, or ``"all"``: train + val + testval).
    overwrite : bool, default=False
    train_fraction : float, default=1.0
        Fit on a seeded random fraction of each subject's rows (the same subset
        as an encoder trained with the same ``train_fraction`` and ``seed``).
    seed : int, default=0

    Returns
    -------
    RidgeModel
    """

    spec, ridge = spec or FeatureSpec(), ridge or RidgeOptions()
    solver, alphas, n_folds = ridge.solver, ridge.alphas, ridge.n_folds
    solve = RIDGE_SOLVERS.get(solver)  # an unknown name lists the registered ones, before any work
    alphas = np.logspace(-2, 6, 17) if alphas is None else np.asarray(alphas, dtype=np.float64)
    Run.check_target(out, [store.path], overwrite, kind="ridge")
    extractor = FeatureExtractor(spec)
    rows_by_subject = {
        n: subsample(store.split_rows(n, split), train_fraction, seed, n) for n in store.names
    }
    image_rows = np.unique(
        np.concatenate([store.subject(n).train_rows[r] for n, r in rows_by_subject.items()])
    )
    raw = np.concatenate(
        [
            extractor.raw(store.read_images(image_rows[s : s + 1024]))
            for s in range(0, image_rows.size, 1024)
        ]
    )
    extractor.fit_pca(raw)
    feats = (
        raw
        if extractor.pca_components is None
        else ((raw - extractor.pca_mean) @ extractor.pca_components.T)
    )
    fits, summary = {}, {}
    for name, rows in rows_by_subject.items():
        X = feats[np.searchsorted(image_rows, store.subject(name).train_rows[rows])]
        Y = store.read_fmri(name, rows)
        logger.info(
            "%s: %s ridge on %d images x %d features -> %d vertices",
            name,
            solver,
            *X.shape,
            Y.shape[1],
        )
        fits[name] = solve(X, Y, alphas, n_folds)
        summary[name] = {
            "n_images": int(X.shape[0]),
            "n_features": int(X.shape[1]),
            "median_alpha": float(np.median(fits[name].alphas)),
        }
    model = RidgeModel(extractor, store.space, fits, store.image_size)
    model.training_record = training_record(
        store, store.names, SPLIT_NAMES if split == "all" else [split]
    )
    settings = {
        "features": dataclasses.asdict(spec),
        "solver": solver,
        "alphas": alphas.tolist(),
        "n_folds": n_folds,
        "split": split,
    }
    with Run.build(out, [store.path], overwrite=overwrite, kind="ridge") as run:
        run.save_model(model)
        run.write_header("ridge", store, settings, baseline=solver)
        run.write_summary({"finished": True, "subjects": summary})
    return model
