"""Ensembles: several runs as one model, and weights chosen on val (per vertex, per ROI...).

Both score and average through the one path of :mod:`brainencoder.inference`:
:func:`val_weights` scores every member with
:func:`~brainencoder.inference.store.split_stats`, and :class:`EnsembleModel`
averages with :func:`~brainencoder.inference.images.average_predictions`
(equal weights), as ``ensemble_predict`` does (equal or per-vertex weights).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..data.store import Store
from ..inference.images import average_predictions
from ..inference.store import split_stats
from ..util.errors import ConfigError, DataError
from .ensemble_weights import (
    WEIGHTINGS,
    best_member,
    normalize,
    per_region,
    region_labels,
    stack_subject,
)
from .provenance import check_held_out
from .run import Run

__all__ = ["EnsembleModel", "val_weights"]


def val_weights(
    models: Sequence,
    run_dirs: Sequence[Path],
    store: Store | Path | None = None,
    power: float = 2.0,
    trust_splits: bool = False,
    by: str = "vertex",
    data: Path | None = None,
) -> list[dict[str, np.ndarray]]:
    """Ensemble weights chosen on the store's val split, per model and vertex.

    ``by="vertex"``: proportional to ``max(r_val, 0) ** power`` at each vertex;
    ``"roi"``: the same averaged over each ROI of the data's ROI groups;
    ``"stack"``: per ROI, non-negative least squares on the val responses;
    ``"best"``: the member with the highest val r at each vertex (see
    :mod:`.ensemble_weights`). Where no model has a positive validation
    correlation the weights are uniform. Weights sum to 1 over models at each
    vertex. Every run must be held out on the store's val split
    (:func:`.provenance.check_held_out`; ``trust_splits`` accepts runs that
    record nothing).

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
    by : {"vertex", "roi", "stack", "best"}, default="vertex"
    data : path, optional
        Challenge data root (or exported folder) with the ROI files, for "roi"
        and "stack" (default: the store's source).

    Returns
    -------
    list (one per model) of dict of str to ndarray of shape (n_lh + n_rh,)

    Raises
    ------
    ConfigError
        For an unknown ``by``, before any work.
    DataError
        A run trained on the val split, or ROI files that cannot be found.
    """
    if by not in WEIGHTINGS:
        raise ConfigError(f"'by' must be one of {list(WEIGHTINGS)}; got {by!r}")
    if not isinstance(store, Store):
        store = Store(store if store is not None else Run(run_dirs[0]).store_path())
    for run in map(Path, run_dirs):
        if run.is_dir():
            Run(run).check_store(store)
        check_held_out(run, "val", [(n, store) for n in store.names], trust_splits)
    regions = _regions(store, data) if by in ("roi", "stack") else {}
    if by == "stack":
        weights = {n: stack_subject(models, store, n, regions[n]) for n in store.names}
    else:
        r = [{n: s.pearson() for n, s in split_stats(m, store, "val").items()} for m in models]
        weights = {}
        for name in store.names:
            stack = np.stack([ri[name] for ri in r])
            scores = np.clip(np.nan_to_num(stack), 0, None) ** power
            if by == "best":
                weights[name] = best_member(stack)
            elif by == "roi":
                weights[name] = per_region(scores, regions[name])
            else:
                weights[name] = normalize(scores)
    return [{name: w[m] for name, w in weights.items()} for m in range(len(models))]


def _regions(store: Store, data: Path | None) -> dict[str, np.ndarray]:
    """Per subject, the region of every challenge column (:func:`region_labels`)."""
    from ..core.regions import subject_roi_masks
    from .exported import open_roi_layout

    root = data if data is not None else store.manifest.get("source", {}).get("root")
    if root is None or not Path(root).exists():
        raise DataError(
            f"{store.path}: the data folder with its ROI files is not known or gone ({root}); "
            "pass the challenge data root (data=...) for weights per ROI"
        )
    layout = open_roi_layout(root, list(store.names))
    out = {}
    for name in store.names:
        n = sum(store.subject(name).n_vertices.values())
        masks = [m.both() for m in subject_roi_masks(layout[name])]
        if any(m.size != n for m in masks):
            raise DataError(
                f"{root}: {name}'s ROI files have other vertices than the store's; "
                "pass the data the store was prepared from"
            )
        out[name] = region_labels(masks, n)
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
    weights : sequence of dict of str to ndarray of shape (n_lh + n_rh,), optional
        Per member, per subject, per-vertex weights summing to 1 over members
        (:func:`val_weights`); default: the plain mean.

    Raises
    ------
    DataError
        The members have other subjects or vertex spaces, or were trained on
        stores of different image sizes.
    """

    def __init__(
        self,
        models: Sequence,
        name: str = "ensemble",
        labels: Sequence[str] | None = None,
        weights: Sequence[Mapping[str, np.ndarray]] | None = None,
    ) -> None:
        if len(models) < 2:
            raise ValueError("an ensemble needs at least two models")
        if weights is not None and len(weights) != len(models):
            raise ValueError(f"{len(weights)} weights for {len(models)} models")
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
        self.weights = None if weights is None else [dict(w) for w in weights]
        self.space = first
        self.name = name
        self.store_image_size = known[0][1] if len(known) == len(models) else None

    def predict(self, images: np.ndarray, subject: str) -> dict[str, np.ndarray]:
        """Mean of the models' predictions (:func:`average_predictions`), weighted if given.

        Parameters
        ----------
        images : ndarray of uint8, shape (n_images, H, W, 3)
        subject : str

        Returns
        -------
        dict with keys "lh", "rh" : ndarray of float32, shape (n_images, n_vertices_hemi)
        """
        preds = [m.predict(images, subject) for m in self.models]
        weights = None if self.weights is None else [w[subject] for w in self.weights]
        return average_predictions(preds, weights)


def _member_labels(name: str, n: int) -> list[str]:
    """The members' names in ``ensemble(a+b)`` (``load``, ``compare``), or numbers."""
    inner = name.removeprefix("ensemble(").removesuffix(")")
    parts = inner.split("+") if name.startswith("ensemble(") and name.endswith(")") else []
    return parts if len(parts) == n and all(parts) else [f"model {i + 1}" for i in range(n)]
