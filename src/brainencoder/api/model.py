"""A trained model, loaded for use in Python: subjects, predictions, maps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..data.images import images_to_uint8
from ..data.sources import as_image_source
from ..runs.load import load_model
from ..runs.run import Run
from ..util.errors import BrainEncoderError, DataError
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

    def __init__(self, model: Any, path: Path) -> None:
        self.model, self.path = model, path

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
        self, images: Any, subject: str, batch_size: int = 32, workers: int | None = 0
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

        Returns
        -------
        Prediction
            ``.lh``, ``.rh`` of shape (N, n_vertices_hemi); ``.to_fsaverage()``, ``.roi(name)``.

        Raises
        ------
        DataError
            For an unknown subject, or images that cannot be read faithfully
            (naming the image).
        ConfigError
            If ``batch_size`` is not a positive integer, before any image is read.

        Examples
        --------
        >>> import brainencoder as be                            # doctest: +SKIP
        >>> model = be.load("runs/phase2")                       # doctest: +SKIP
        >>> pred = model.predict("my_images/", subject="subj01") # doctest: +SKIP
        """
        from ..inference.images import check_batch_size, predict_images

        if subject not in self.subjects:
            raise DataError(
                f"unknown subject {subject!r}; the model has {', '.join(self.subjects)}"
            )
        batch_size = check_batch_size(batch_size)
        source = as_image_source(images_to_uint8(images))
        if len(source) == 0:
            raise DataError("no images to predict")
        out = predict_images(self.model, source, subject, batch_size, False, workers)
        return Prediction(
            subject,
            np.asarray(out["lh"]),
            np.asarray(out["rh"]),
            self.model.space,
            self.data_root(subject),
        )


def load(path: str | Path, *more: str | Path) -> Model:
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
    models = [load_model(p) for p in paths]
    if len(models) == 1:
        return Model(models[0], paths[0])
    labels = [p.name for p in paths]
    ensemble = EnsembleModel(models, name=f"ensemble({'+'.join(labels)})", labels=labels)
    return Model(ensemble, paths[0])
