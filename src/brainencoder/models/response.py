"""What every trained model offers: predictions of a subject's responses to images."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..core.space import GroupSpace

__all__ = ["ResponseModel"]


@runtime_checkable
class ResponseModel(Protocol):
    """A model that predicts every vertex of a subject from images.

    :class:`~brainencoder.models.encoder.Encoder`,
    :class:`~brainencoder.models.ridge.RidgeModel` and
    :class:`~brainencoder.runs.ensemble.EnsembleModel` implement it, so every
    command that takes a run (``evaluate``, ``predict``, ``submit``,
    ``compare``, ``explore``) serves all three the same way.

    Attributes
    ----------
    space : GroupSpace
        The subjects and vertices the model predicts.
    store_image_size : int or None
        The side, in pixels, of the stored images the model was trained on;
        new images are resized to it before the model's own preprocessing.
    """

    space: GroupSpace
    store_image_size: int | None

    def predict(self, images: np.ndarray, subject: str) -> dict[str, np.ndarray]:
        """Predicted responses of ``subject``.

        Parameters
        ----------
        images : ndarray of uint8, shape (N, H, W, 3)
        subject : str
            One of ``space.subjects``.

        Returns
        -------
        dict of str to ndarray of float32
            ``"lh"`` and ``"rh"``, each (N, n_vertices of the subject in that hemisphere).
        """
        ...
