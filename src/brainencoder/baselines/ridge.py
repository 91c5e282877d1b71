"""Ridge baselines on frozen features: himalaya-style ridge and the devkit baseline.

``brainencoder baseline ridge`` fits, per subject, a linear map from image
features to every vertex on the store's train split, with a per-vertex alpha
chosen by 5-fold cross-validation (:func:`~brainencoder.baselines.solvers.ridge_cv`,
or himalaya's ``RidgeCV``, or scikit-learn's). ``brainencoder baseline devkit``
is the official Algonauts 2023 tutorial's model: PCA (100 components) of one
layer's features and ordinary least squares.

Features (:class:`~brainencoder.baselines.features.FeatureSpec`, re-exported
here): downsampled pixels, or spatially pooled maps of chosen trunk layers
(mean over space, or a ``grid`` x ``grid`` average), optionally PCA-reduced.
A baseline run directory has the shape of an encoder run (``config.yaml``
naming the store, the model in ``ridge.safetensors``, ``summary.json``), so
``evaluate``, ``plot``, ``predict`` and ``submit`` work on it unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..data.store import Store
from ..errors import CheckpointError, ConfigError
from ..fileio import atomic_path, write_bytes_atomic, write_json_atomic
from ..ownership import check_output_location, check_replaceable, mark_owned, replace_owned
from ..space import GroupSpace
from .features import FeatureExtractor, FeatureSpec
from .solvers import RidgeFit, ols, ridge_cv

__all__ = [
    "FeatureExtractor",
    "FeatureSpec",
    "RidgeModel",
    "fit_ridge_baseline",
    "fit_subject_ridge",
]

logger = logging.getLogger(__name__)
_SOLVERS = ("torch", "himalaya", "sklearn", "ols")


class RidgeModel:
    """Per-subject linear maps from features to the subject's vertices.

    Has the prediction interface of an encoder: ``space``,
    ``predict(images, subject)`` and ``store_image_size``.
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        space: GroupSpace,
        fits: dict[str, RidgeFit],
        store_image_size: int | None = None,
    ) -> None:
        self.extractor, self.space, self.fits = extractor, space, fits
        self.store_image_size = store_image_size

    def predict(self, images: np.ndarray, subject: str) -> dict[str, np.ndarray]:
        """Predictions in the subject's challenge space, lh and rh (n_images, n_vertices)."""
        self.space.subject_index(subject)
        pred = self.fits[subject].predict(self.extractor(np.asarray(images)))
        n_lh = self.space.n_subject_vertices(subject, "lh")
        return {"lh": pred[:, :n_lh], "rh": pred[:, n_lh:]}

    def save(self, path: str | Path) -> None:
        """Self-contained safetensors file (trunk weights, PCA, maps, group space)."""
        from safetensors.torch import save_file

        tensors = {f"space.{k}": torch.from_numpy(v) for k, v in self.space.to_arrays().items()}
        for name, fit in self.fits.items():
            for key in ("coef", "intercept", "alphas"):
                tensors[f"fit.{name}.{key}"] = torch.from_numpy(
                    np.ascontiguousarray(getattr(fit, key), dtype=np.float32)
                )
        if self.extractor.trunk is not None:
            for k, v in self.extractor.trunk.state_dict().items():
                tensors[f"trunk.{k}"] = v.detach().contiguous()
        if self.extractor.pca_components is not None:
            tensors["pca.mean"] = torch.from_numpy(self.extractor.pca_mean)
            tensors["pca.components"] = torch.from_numpy(self.extractor.pca_components)
        meta = {
            "format": "brainencoder-ridge",
            "brainencoder_version": __version__,
            "spec": json.dumps(dataclasses.asdict(self.extractor.spec)),
            "subjects": json.dumps(self.space.subjects),
            "store_image_size": json.dumps(self.store_image_size),
        }
        with atomic_path(path, suffix=".safetensors") as tmp:
            save_file(tensors, str(tmp), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> RidgeModel:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path}: cannot read ridge model ({exc})") from None
        if meta.get("format") != "brainencoder-ridge":
            raise CheckpointError(f"{path}: not a brainencoder ridge model")
        spec = FeatureSpec(**json.loads(meta["spec"]))
        trunk_state = {k[6:]: v for k, v in tensors.items() if k.startswith("trunk.")}
        extractor = FeatureExtractor(spec, trunk_state or None)
        if "pca.mean" in tensors:
            extractor.pca_mean = tensors["pca.mean"].numpy()
            extractor.pca_components = tensors["pca.components"].numpy()
        subjects = json.loads(meta["subjects"])
        space = GroupSpace.from_arrays(
            subjects, {k[6:]: v.numpy() for k, v in tensors.items() if k.startswith("space.")}
        )
        fits = {
            s: RidgeFit(
                tensors[f"fit.{s}.coef"].numpy(),
                tensors[f"fit.{s}.intercept"].numpy(),
                tensors[f"fit.{s}.alphas"].numpy(),
                np.zeros(0),
            )
            for s in subjects
        }
        return cls(extractor, space, fits, json.loads(meta["store_image_size"]))


def _fit(solver: str, X: np.ndarray, Y: np.ndarray, alphas: np.ndarray, n_folds: int) -> RidgeFit:
    if solver == "torch":
        return ridge_cv(X, Y, alphas, n_folds)
    if solver == "ols":
        return ols(X, Y)
    if solver == "himalaya":
        from himalaya.ridge import RidgeCV

        model = RidgeCV(alphas=alphas, cv=n_folds, fit_intercept=True).fit(X, Y)
        return RidgeFit(
            np.asarray(model.coef_, np.float32),
            np.asarray(model.intercept_, np.float32),
            np.asarray(model.best_alphas_),
            np.asarray(model.cv_scores_),
        )
    from sklearn.linear_model import RidgeCV as SkRidgeCV

    # efficient leave-one-out CV: scikit-learn allows no K-fold with alpha_per_target
    model = SkRidgeCV(alphas=alphas, alpha_per_target=True).fit(X, Y)
    alpha = np.broadcast_to(np.asarray(model.alpha_, dtype=np.float64), (Y.shape[1],))
    return RidgeFit(
        model.coef_.T.astype(np.float32),
        np.asarray(model.intercept_, np.float32),
        np.array(alpha),
        np.zeros(Y.shape[1]),
    )


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


def fit_ridge_baseline(
    store: Store,
    out: str | Path,
    spec: FeatureSpec | None = None,
    solver: str = "torch",
    alphas: np.ndarray | None = None,
    n_folds: int = 5,
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
    solver : {"torch", "himalaya", "sklearn", "ols"}, default="torch"
    alphas : ndarray, optional
        Default ``np.logspace(-2, 6, 17)``.
    n_folds : int, default=5
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

    import yaml

    spec = spec or FeatureSpec()
    if solver not in _SOLVERS:
        raise ConfigError(f"'solver' must be one of {set(_SOLVERS)}; got {solver!r}")
    alphas = np.logspace(-2, 6, 17) if alphas is None else np.asarray(alphas, dtype=np.float64)
    out = Path(out)
    check_output_location(out, [store.path])
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise CheckpointError(f"{out} already holds a run; pass --overwrite to replace it")
        check_replaceable(out, "ridge-run", [store.path])
    work = out.parent / f".{out.name}.tmp"  # built aside, moved into place when complete
    replace_owned(work, "ridge-run", [store.path])  # left by a killed fit
    work.mkdir(parents=True)
    mark_owned(work, "ridge-run")
    extractor = FeatureExtractor(spec)
    from ..data.splits import subsample

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
        fits[name] = _fit(solver, X, Y, alphas, n_folds)
        summary[name] = {
            "n_images": int(X.shape[0]),
            "n_features": int(X.shape[1]),
            "median_alpha": float(np.median(fits[name].alphas)),
        }
    model = RidgeModel(extractor, store.space, fits, store.image_size)
    model.save(work / "ridge.safetensors")
    header = {
        "brainencoder_version": __version__,
        "store": str(store.path.absolute()),
        "store_identity": store.identity(),
        "baseline": solver,
    }
    config = {
        "run": header,
        "features": dataclasses.asdict(spec),
        "solver": solver,
        "alphas": alphas.tolist(),
        "n_folds": n_folds,
        "split": split,
    }
    write_bytes_atomic(work / "config.yaml", yaml.safe_dump(config, sort_keys=False).encode())
    write_json_atomic(work / "summary.json", {"finished": True, "subjects": summary})
    replace_owned(out, "ridge-run", [store.path])
    os.replace(work, out)
    return model
