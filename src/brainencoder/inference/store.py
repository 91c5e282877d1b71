"""Predictions of any model over store rows, and the per-vertex statistics they give.

:func:`predict_store_rows` is the one prediction over a store: every model (an
encoder, a ridge model, an ensemble) through its ``predict``, or an encoder
given the feature cache of its frozen trunk through its readout alone.
:func:`subject_stats` and :func:`split_stats` stream those predictions against
the responses; validation during training, soups, ensemble weights and
``evaluate`` all score models with them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from ..core.metrics import StreamingStats
from ..core.space import HEMIS
from ..data.store import Store
from ..models.encoder import Encoder
from ..models.response import ResponseModel
from ..util.prefetch import prefetch
from .cache import FeatureCache, InMemoryFeatures

__all__ = ["predict_store_rows", "split_stats", "subject_stats", "summarize_stats"]


def predict_store_rows(
    model: ResponseModel | torch.nn.Module,
    store: Store,
    subject: str,
    rows: np.ndarray,
    batch_size: int = 64,
    test: bool = False,
    cache: FeatureCache | InMemoryFeatures | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Predict a subject's store images batch by batch; the next batch is read meanwhile.

    Parameters
    ----------
    model : ResponseModel
        Any model with ``predict(images, subject)`` (an ``Encoder``, possibly
        wrapped in DistributedDataParallel, a ridge model, an ensemble).
    store : Store
    subject : str
    rows : ndarray of int64, shape (n,)
        Rows of the subject's training images (of its test images if ``test``),
        e.g. ``store.split_rows(subject, "val")``.
    batch_size : int, default=64
    test : bool, default=False
    cache : FeatureCache or InMemoryFeatures, optional
        The feature cache of the encoder's frozen trunk: view 0 (the plain
        resized image) of each image is read from it and only the readout runs.
        Its features may be stored as float16 or int8, so predictions agree with
        those from the images to that precision, not bit for bit.

    Yields
    ------
    positions : ndarray of int64, shape (b,)
        Positions into ``rows`` of this batch.
    predictions : ndarray of float32, shape (b, n_lh + n_rh)
        In the subject's challenge space, lh columns then rh.

    Raises
    ------
    TypeError
        A cache with a model that is not an encoder.
    StoreError
        A cache that lacks some of the images (the test images are never cached).
    """
    model = getattr(model, "module", model) if isinstance(model, torch.nn.Module) else model
    info = store.subject(subject)
    image_rows = (info.test_rows if test else info.train_rows)[np.asarray(rows, dtype=np.int64)]
    starts = list(range(0, image_rows.size, batch_size))
    if cache is None:

        def read(start: int) -> np.ndarray:
            return store.read_images(image_rows[start : start + batch_size])

        def predict(images: np.ndarray) -> np.ndarray:
            pred = model.predict(images, subject)
            return np.concatenate([pred[h] for h in HEMIS], 1)

    elif not isinstance(model, Encoder):
        raise TypeError(
            f"a feature cache holds an encoder's trunk features; got a {type(model).__name__}"
        )
    else:

        def read(start: int) -> list[torch.Tensor]:
            chunk = image_rows[start : start + batch_size]
            return cache.get(np.zeros(chunk.size, dtype=np.int64), cache.lookup(chunk))

        predict = _readout_predictor(model, subject)

    for start, batch in zip(starts, prefetch(read, starts)):  # reads overlap the model
        pred = predict(batch)
        yield np.arange(start, start + pred.shape[0]), pred


def _readout_predictor(model: Encoder, subject: str) -> Callable[[list[torch.Tensor]], np.ndarray]:
    """``features -> predictions``: the readout of ``model`` in eval mode, for one subject.

    The callable takes one (b, C, *positions) float32 tensor per cached layer
    and returns (b, n_lh + n_rh) float32 predictions in the subject's challenge
    space.
    """
    device = next(model.parameters()).device
    cols = torch.from_numpy(model.space.subject_columns(subject)).to(device)
    index = model.space.subject_index(subject)

    @torch.no_grad()
    def predict(features: list[torch.Tensor]) -> np.ndarray:
        subj = torch.full((features[0].shape[0],), index, dtype=torch.long, device=device)
        was_training = model.training
        model.eval()
        try:
            out = model.readout([f.to(device) for f in features], subj)
        finally:
            model.train(was_training)
        return out[:, cols].float().cpu().numpy()

    return predict


def subject_stats(
    model: ResponseModel | torch.nn.Module,
    store: Store,
    subject: str,
    rows: np.ndarray,
    targets: Callable[[np.ndarray], np.ndarray] | None = None,
    test: bool = False,
    cache: FeatureCache | InMemoryFeatures | None = None,
    batch_size: int = 64,
) -> StreamingStats:
    """Streaming statistics of a model's predictions against a subject's responses.

    Parameters
    ----------
    model, store, subject, rows, test, cache, batch_size
        As for :func:`predict_store_rows`.
    targets : callable, optional
        ``targets(rows_of_a_batch)`` gives the (b, n_lh + n_rh) responses of
        those rows; default: the store's fMRI (``store.read_fmri(subject, ...)``).

    Returns
    -------
    StreamingStats
        Over (n_lh + n_rh) vertices; ``pearson()`` and ``r2()`` give one value each.
    """
    read = targets if targets is not None else (lambda r: store.read_fmri(subject, r))
    rows = np.asarray(rows, dtype=np.int64)
    stats = StreamingStats(sum(store.subject(subject).n_vertices.values()))
    for pos, pred in predict_store_rows(model, store, subject, rows, batch_size, test, cache):
        stats.update(pred, read(rows[pos]))
    return stats


def split_stats(
    model: ResponseModel | torch.nn.Module,
    store: Store,
    split: str,
    cache: FeatureCache | InMemoryFeatures | None = None,
    batch_size: int = 64,
) -> dict[str, StreamingStats]:
    """Per-subject statistics of predictions against the fMRI of a store split.

    Parameters
    ----------
    model : ResponseModel
        As for :func:`predict_store_rows` (with ``cache``: an encoder).
    store : Store
    split : {"train", "val", "testval", "all"}
    cache : FeatureCache or InMemoryFeatures, optional
    batch_size : int, default=64

    Returns
    -------
    dict of str to StreamingStats
        One per subject of the store, each over its (n_lh + n_rh) vertices.
    """
    return {
        name: subject_stats(
            model, store, name, store.split_rows(name, split), cache=cache, batch_size=batch_size
        )
        for name in store.names
    }


def summarize_stats(stats: dict[str, StreamingStats], prefix: str) -> dict[str, float]:
    """Median and mean R² and Pearson r, per subject and over all vertices.

    Parameters
    ----------
    stats : dict of str to StreamingStats
        One per subject (:func:`split_stats`).
    prefix : str
        Of every key, e.g. ``"val"``.

    Returns
    -------
    dict of str to float
        ``{prefix}/{subject}/r2_median``, ``{prefix}/{subject}/pearson_median``
        and ``{prefix}/r2_median``, ``r2_mean``, ``pearson_median``,
        ``pearson_mean`` over every vertex of every subject.
    """
    metrics: dict[str, float] = {}
    all_r2, all_r = [], []
    for name, s in stats.items():
        r2, r = s.r2(), s.pearson()
        all_r2.append(r2)
        all_r.append(r)
        metrics[f"{prefix}/{name}/r2_median"] = float(np.median(r2))
        metrics[f"{prefix}/{name}/pearson_median"] = float(np.median(r))
    r2, r = np.concatenate(all_r2), np.concatenate(all_r)
    metrics.update(
        {
            f"{prefix}/r2_median": float(np.median(r2)),
            f"{prefix}/r2_mean": float(r2.mean()),
            f"{prefix}/pearson_median": float(np.median(r)),
            f"{prefix}/pearson_mean": float(r.mean()),
        }
    )
    return metrics
