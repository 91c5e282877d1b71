"""What ``plan`` compares images by: a model's predicted responses of the average subject.

A new subject starts ``adapt`` at the average of the group subjects'
parameters, so what its own parameters read, seen through the model, is the
response the model predicts for the average subject; where those predictions
differ between images, the images teach the new subject's map different
things. :func:`pool_responses` predicts them for every image of a pool at a
seeded subset of the group vertices (at most ``max_vertices``: enough for
the leading principal components, and memory stays at a few hundred MB for
NSD's 73,000 images), once per member of an ensemble.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..data.sources import ImageSource
from ..models.encoder import Encoder

__all__ = ["members", "pool_responses"]


def members(model: object) -> list:
    """The models of an ensemble (``.models``), or the one model."""
    return list(getattr(model, "models", [model]))


def _decode_size(model: object) -> int:
    size = getattr(model, "store_image_size", None) or getattr(model, "input_size", None)
    return int(size)


@torch.no_grad()
def _encoder_batch(model: Encoder, images: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """The subjects' mean prediction at ``vertices`` (each over the subjects having it)."""
    model.eval()
    features = model.forward_features(model.prepare_images(torch.from_numpy(images)))
    masks = model.space.masks()[:, vertices].astype(np.float32)  # (n_subjects, V)
    total = np.zeros((images.shape[0], vertices.size), np.float32)
    for index in range(len(model.subjects)):
        subj = torch.full((images.shape[0],), index, dtype=torch.long)
        out = model.readout(features, subj)[:, torch.from_numpy(vertices)].float().numpy()
        total += out * masks[index]
    return total / np.maximum(masks.sum(0), 1)


def _any_batch(model: object, images: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """As :func:`_encoder_batch` for any model with ``predict`` (a ridge model, say)."""
    space = model.space
    where = np.full(space.n_vertices, -1, np.int64)
    where[vertices] = np.arange(vertices.size)
    total = np.zeros((images.shape[0], vertices.size), np.float32)
    count = np.zeros(vertices.size, np.float32)
    for subject in space.subjects:
        pred = model.predict(images, subject)
        both = np.concatenate([pred["lh"], pred["rh"]], 1)
        cols = where[space.subject_columns(subject)]
        keep = cols >= 0
        total[:, cols[keep]] += both[:, keep]
        count[cols[keep]] += 1
    return total / np.maximum(count, 1)


def pool_responses(
    models: Sequence,
    source: ImageSource,
    max_vertices: int = 4096,
    seed: int = 0,
    batch_size: int = 32,
) -> np.ndarray:
    """Every member's average-subject prediction for every image of the pool.

    Parameters
    ----------
    models : sequence of models
        Encoders, ridge models (anything with ``space`` and ``predict``); one
        vertex space.
    source : ImageSource
        The pool (a folder of images or an image array file).
    max_vertices : int, default=4096
        Predictions are kept at a seeded subset of this many group vertices.
    seed : int, default=0
    batch_size : int, default=32

    Returns
    -------
    ndarray of float32, shape (n_models, n_images, n_kept_vertices)
    """
    n_vertices = models[0].space.n_vertices
    rng = np.random.default_rng(np.random.SeedSequence([seed, 37]))
    keep = min(max_vertices, n_vertices)
    vertices = np.sort(rng.choice(n_vertices, size=keep, replace=False))
    out = np.zeros((len(models), len(source), keep), np.float32)
    for m, model in enumerate(models):
        size = _decode_size(model)
        for start in range(0, len(source), batch_size):
            stop = min(start + batch_size, len(source))
            images = np.stack([source.load(i, size) for i in range(start, stop)])
            batch = _encoder_batch if isinstance(model, Encoder) else _any_batch
            out[m, start:stop] = batch(model, images, vertices)
    return out
