"""A trained model, loaded for use in Python: subjects, predictions, maps."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..data.images import images_to_uint8
from ..data.sources import as_image_source
from ..runs.load import load_model
from ..runs.run import Run
from ..util.errors import BrainEncoderError, ConfigError, DataError
from .predictions import Prediction

__all__ = ["Model", "load"]


class Model:
    """A trained model (encoder, ridge baseline or ensemble) and where it came from.

    Use :func:`load` to get one.

    Attributes
    ----------
    model : ResponseModel
        The underlying model (:class:`~brainencoder.models.encoder.Encoder`,
        :class:`~brainencoder.models.ridge.RidgeModel`, ...).
    path : Path
        The run folder or model file it was loaded from (an ensemble's first).
    """

    def __init__(self, model: Any, path: Path, paths: list[Path] | None = None) -> None:
        self.model, self.path = model, path
        self.paths = list(paths) if paths else [path]  # an ensemble's members

    def __repr__(self) -> str:
        return f"Model({str(self.path)!r}, subjects={self.subjects})"

    @property
    def subjects(self) -> list[str]:
        """The subjects the model predicts."""
        return list(self.model.space.subjects)

    @property
    def space(self):
        """The model's vertex space (:class:`~brainencoder.core.space.GroupSpace`)."""
        return self.model.space

    def data_root(self, subject: str) -> Path | None:
        """Where ``subject``'s ROI files are, if known: the exported folder, or its store's data."""
        from ..runs.exported import is_export

        if is_export(self.path):
            return self.path  # rois/SUBJ/ of the exported folder
        if not self.path.is_dir():
            return None
        try:
            pairs = Run(self.path).subject_stores([subject])
        except BrainEncoderError:
            pairs = []
        for _, store in pairs:
            root = store.manifest.get("source", {}).get("root")
            return Path(root) if root else None
        try:  # a run adapted from an exported folder: the group subjects' ROI files are there
            base = Run(self.path).header.get("adapted_from")
        except BrainEncoderError:
            return None
        return Path(base) if isinstance(base, str) and is_export(base) else None

    def predict(
        self,
        images: Any,
        subject: str,
        batch_size: int = 32,
        workers: int | None = 0,
        interval: float | None = None,
        calibration: str | Path | None = None,
    ) -> Prediction:
        """Predicted responses of ``subject`` to ``images``.

        Parameters
        ----------
        images : PIL image(s), array or torch tensor (N, H, W, 3), path(s), folder or array file
            Any size and mode; each image is converted and resized exactly as
            ``brainencoder predict`` does with files. Arrays and tensors (on
            any device) hold one image (H, W, 3) or a batch (N, H, W, 3), or
            come as a list of images, channels last: uint8 (0-255), or float
            in [0, 1] (values within [-0.2, 1.2] are clipped to it, others
            refused; :func:`~brainencoder.data.images.float_to_uint8`), so a
            float image ``x`` predicts as ``uint8 round(255 * x)`` does.
        subject : str
            One of :attr:`subjects`.
        batch_size : int, default=32
            Images per batch: a positive integer.
        workers : int or None, default=0
            Decoding threads (None: one per CPU).
        interval : float, optional
            Also give bounds that hold the measured response with this
            probability (0.9: 90% of (image, vertex) pairs), from the spread
            of the ensemble's members, calibrated on responses none of them
            trained on (``be.calibrate`` / ``brainencoder calibrate`` first).
            The prediction is then the members' plain mean.
        calibration : path, optional
            The calibration file (default: the one ``calibrate`` wrote beside
            the first run for these runs).

        Returns
        -------
        Prediction
            ``.lh``, ``.rh`` of shape (N, n_vertices_hemi); ``.to_fsaverage()``, ``.roi(name)``;
            with ``interval``, ``.lower`` and ``.upper`` (dicts of the same shapes); ``.save``.

        Raises
        ------
        DataError
            For an unknown subject, or images that cannot be read faithfully
            (naming the image).
        ConfigError
            If ``batch_size`` is not a positive integer, before any image is read.
        DataError
            With ``interval``: no calibration for these runs, or one of other runs.

        Examples
        --------
        >>> import brainencoder as be                            # doctest: +SKIP
        >>> model = be.load("runs/phase2")                       # doctest: +SKIP
        >>> pred = model.predict("my_images/", subject="subj01") # doctest: +SKIP
        >>> sure = be.load("runs/s0", "runs/s1", "runs/s2").predict(
        ...     "my_images/", subject="subj01", interval=0.9)    # doctest: +SKIP
        >>> sure.lower["lh"], sure.upper["lh"]                   # doctest: +SKIP
        """
        from ..inference.images import check_batch_size, predict_images

        if subject not in self.subjects:
            raise DataError(
                f"unknown subject {subject!r}; the model has {', '.join(self.subjects)}"
            )
        batch_size = check_batch_size(batch_size)
        calibrated = None if interval is None else self._calibration(interval, calibration)
        source = as_image_source(images_to_uint8(images))
        if len(source) == 0:
            raise DataError("no images to predict")
        pred = Prediction(subject, *([None] * 2), self.model.space, self.data_root(subject))
        if calibrated is None:
            out = predict_images(self.model, source, subject, batch_size, False, workers)
            pred.lh, pred.rh = np.asarray(out["lh"]), np.asarray(out["rh"])
        else:
            _with_interval(pred, self, source, (calibrated, interval), (batch_size, workers))
        pred.labels = _labels(source)
        return pred

    def _calibration(self, interval: Any, calibration: str | Path | None):
        """The checked calibration of this model's runs (before any image is read)."""
        from ..inference.conformal import conformal_rank
        from ..runs.calibration import default_calibration_path, read_calibration

        conformal_rank(10**9, interval)  # the level is a number in (0, 1)
        if getattr(self.model, "weights", None) is not None:
            raise DataError(
                "intervals are calibrated around the members' plain mean: load the runs "
                "without weights= to predict with interval="
            )
        path = Path(calibration) if calibration is not None else None
        path = path or default_calibration_path(self.paths)
        cal = read_calibration(path)
        cal.check_members(self.paths, path)
        return cal


def load(
    path: str | Path,
    *more: str | Path,
    weights: Literal["vertex", "roi", "stack", "best"] | None = None,
    store: str | Path | None = None,
    data: str | Path | None = None,
    trust_splits: bool = False,
) -> Model:
    """Load a trained model: a run folder, a model file or an exported folder; several: an ensemble.

    Parameters
    ----------
    path : path
        A run folder written by ``train``, ``adapt``, ``baseline``, ``soup``, a
        ``.safetensors`` model file (``import-original`` writes one), a folder
        written by ``export`` (:func:`brainencoder.api.export`), or ``"hf:ORG/NAME"``:
        such a folder on the Hugging Face hub, read from the local cache only
        (``hf download ORG/NAME`` puts it there). An exported folder needs
        neither the store nor the challenge's files: its ROI labels are in it.
    *more : path
        Further runs or model files of the same subjects and vertex space: the
        model is then their ensemble, predicting the mean of their predictions
        (as ``submit RUN RUN ...`` and ``compare --ensemble`` do). Seeds of one
        recipe, averaged, score higher than any one of them (docs/performance.md).
    weights : {"vertex", "roi", "stack", "best"}, optional
        Weight the ensemble's members on the store's val split instead of the
        plain mean (:func:`~brainencoder.runs.ensemble.val_weights`): by val r per
        vertex, averaged per ROI, stacked per ROI (non-negative least squares), or
        the best member per vertex. Every run must have been trained without the
        val split (docs/workflow.md, "Ensembles weighted on validation").
    store : path, optional
        The store whose val split chooses ``weights`` (default: the first run's).
    data : path, optional
        The challenge data root with the ROI files, for "roi" and "stack"
        (default: the store's source).
    trust_splits : bool, default=False
        Accept runs that record no training splits for ``weights``.

    Returns
    -------
    Model

    Examples
    --------
    >>> import brainencoder as be                                # doctest: +SKIP
    >>> model = be.load("demo-output/runs/phase2")               # doctest: +SKIP
    >>> model.subjects                                           # doctest: +SKIP
    ['subj01', 'subj02', 'subj03']
    >>> both = be.load("runs/seed0", "runs/seed1")               # doctest: +SKIP
    >>> shared = be.load("hf:my-lab/nsd-encoder")                # doctest: +SKIP
    """
    from ..runs.ensemble import EnsembleModel
    from ..runs.hub import resolve_source

    paths = [resolve_source(p) for p in (path, *more)]
    for p in paths:
        if not p.exists():
            raise DataError(f"{p}: no such run folder or model file")
    if weights is not None and len(paths) < 2:
        raise ConfigError(f"weights={weights!r} weights an ensemble: pass two or more runs")
    models = [load_model(p) for p in paths]
    if len(models) == 1:
        return Model(models[0], paths[0])
    labels = [p.name for p in paths]
    chosen = None
    if weights is not None:
        from ..runs.ensemble import val_weights

        chosen = val_weights(
            models,
            paths,
            None if store is None else Path(store),
            trust_splits=trust_splits,
            by=weights,
            data=None if data is None else Path(data),
        )
        missing = [s for s in models[0].space.subjects if s not in chosen[0]]
        if missing:
            raise DataError(
                f"{store or paths[0]}: the store has no val split of {', '.join(missing)}; "
                "choose weights on a store holding every subject of the runs"
            )
    name = f"ensemble({'+'.join(labels)})"
    return Model(EnsembleModel(models, name=name, labels=labels, weights=chosen), paths[0], paths)


def _labels(source: Any) -> dict[str, np.ndarray]:
    """The images' names, or the rows of an image array (what ``predict`` saves with them)."""
    from ..data.sources import ImageArray

    if isinstance(source, ImageArray):
        return {"rows": np.asarray(source.rows, dtype=np.int64)}
    return {"names": np.array(source.names)}


def _with_interval(
    pred: Prediction, model: Model, source: Any, calibrated: tuple, batching: tuple
) -> None:
    """Fill ``pred`` with the members' mean and the calibrated bounds around it.

    ``calibrated`` is (Calibration, level), ``batching`` (batch_size, workers).
    """
    from ..core.space import HEMIS
    from ..inference.conformal import member_spread
    from ..inference.images import predict_images

    cal, level = calibrated
    members = getattr(model.model, "models", None) or [model.model]
    preds = []
    for member in members:
        out = predict_images(member, source, pred.subject, batching[0], False, batching[1])
        preds.append(np.concatenate([out[h] for h in HEMIS], 1))
    mean, sd = member_spread(preds)
    lower, upper = cal.interval(pred.subject, mean, sd, level)
    n_lh = model.space.n_subject_vertices(pred.subject, "lh")
    pred.lh, pred.rh = mean[:, :n_lh], mean[:, n_lh:]
    pred.lower = {"lh": lower[:, :n_lh], "rh": lower[:, n_lh:]}
    pred.upper = {"lh": upper[:, :n_lh], "rh": upper[:, n_lh:]}
    pred.level = float(level)
