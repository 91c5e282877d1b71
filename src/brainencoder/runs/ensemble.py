"""Ensembles: several runs as one model, and per-vertex weights chosen on val.

Both score and average through the one path of :mod:`brainencoder.inference`:
:func:`val_weights` scores every member with
:func:`~brainencoder.inference.store.split_stats`, and :class:`EnsembleModel`
averages with :func:`~brainencoder.inference.images.average_predictions`
(equal weights), as ``ensemble_predict`` does (equal or per-vertex weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.store import Store
from ..inference.images import average_predictions
from ..inference.store import split_stats
from ..util.errors import DataError
from .provenance import check_held_out
from .run import Run

__all__ = ["EnsembleModel", "val_weights"]


def val_weights(
    models: Sequence,
    run_dirs: Sequence[Path],
    store: Store | Path | None = None,
    power: float = 2.0,
    trust_splits: bool = False,
) -> list[dict[str, np.ndarray]]:
    """Weights proportional to ``max(r_val, 0) ** power`` per model and vertex.

    Where no model has a positive validation correlation the weights are
    uniform. Weights sum to 1 over models at each vertex. Every run must be
    held out on the store's val split (:func:`.provenance.check_held_out`;
    ``trust_splits`` accepts runs that record nothing).

    Parameters
    ----------
    models : sequence of models
        Each with ``predict(images, subject)``, of the store's subjects.
    run_dirs : sequence of path
        The models' run folders (or model files), for the held-out check.
    store : Store or path, optional
        Default: the store of the first run.
    power : float, default=2.0
    trust_splits : bool, default=False

    Returns
    -------
    list (one per model) of dict of str to ndarray of shape (n_lh + n_rh,)
    """
    if not isinstance(store, Store):
        store = Store(store if store is not None else Run(run_dirs[0]).store_path())
    for run in map(Path, run_dirs):
        if run.is_dir():
            Run(run).check_store(store)
        check_held_out(run, "val", [(n, store) for n in store.names], trust_splits)
    raw = [
        {
            name: np.clip(s.pearson(), 0, None) ** power
            for name, s in split_stats(m, store, "val").items()
        }
        for m in models
    ]
    out = [dict() for _ in models]
    for name in store.names:
        stack = np.stack([r[name] for r in raw])
        total = stack.sum(0)
        uniform = np.full_like(stack, 1.0 / len(models))
        weights = np.where(total > 0, stack / np.where(total > 0, total, 1), uniform)
        for m in range(len(models)):
            out[m][name] = weights[m]
    return out


class EnsembleModel:
    """Several trained models of one vertex space as one model: the mean prediction.

    It has what :func:`~brainencoder.runs.run.load_model` models have
    (``space``, ``predict(images, subject)``, ``store_image_size``), so
    ``compare``, ``evaluate`` helpers and ``explore`` take it like one run.

    Parameters
    ----------
    models : sequence of models
        Encoders or ridge models with the same subjects and vertex space, trained
        on stores of one image size (each decodes images at its store's size).
    name : str, default="ensemble"
        ``ensemble(a+b)`` names its members ``a`` and ``b`` in errors.
    labels : sequence of str, optional
        The members' names (their run folders) for errors; default: from
        ``name``, else ``model 1``, ``model 2``...

    Raises
    ------
    DataError
        The members have other subjects or vertex spaces, or were trained on
        stores of different image sizes.
    """

    def __init__(
        self, models: Sequence, name: str = "ensemble", labels: Sequence[str] | None = None
    ) -> None:
        if len(models) < 2:
            raise ValueError("an ensemble needs at least two models")
        labels = list(labels) if labels is not None else _member_labels(name, len(models))
        first = models[0].space
        for model in models[1:]:
            if not model.space.same_as(first):
                raise DataError(
                    f"{name}: its models have different subjects or vertex spaces "
                    f"({first.subjects} vs {model.space.subjects}); ensemble runs of one dataset"
                )
        sizes = [getattr(m, "store_image_size", None) for m in models]
        known = [(label, size) for label, size in zip(labels, sizes, strict=True) if size]
        other = next(((lb, s) for lb, s in known if s != known[0][1]), None)
        if other is not None:
            raise DataError(
                f"{name}: its members were trained on stores of different image sizes "
                f"({known[0][0]}: {known[0][1]} px, {other[0]}: {other[1]} px), so they cannot "
                "predict from the same decoded images; ensemble runs trained on one store"
            )
        self.models = list(models)
        self.space = first
        self.name = name
        self.store_image_size = known[0][1] if len(known) == len(models) else None

    def predict(self, images: np.ndarray, subject: str) -> dict[str, np.ndarray]:
        """Mean of the models' predictions (:func:`average_predictions`, equal weights).

        Parameters
        ----------
        images : ndarray of uint8, shape (n_images, H, W, 3)
        subject : str

        Returns
        -------
        dict with keys "lh", "rh" : ndarray of float32, shape (n_images, n_vertices_hemi)
        """
        return average_predictions([m.predict(images, subject) for m in self.models])


def _member_labels(name: str, n: int) -> list[str]:
    """The members' names in ``ensemble(a+b)`` (``load``, ``compare``), or numbers."""
    inner = name.removeprefix("ensemble(").removesuffix(")")
    parts = inner.split("+") if name.startswith("ensemble(") and name.endswith(")") else []
    return parts if len(parts) == n and all(parts) else [f"model {i + 1}" for i in range(n)]
