"""Predictions of an encoder on store splits, and the per-vertex statistics."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ..core.metrics import StreamingStats
from ..core.space import HEMIS
from ..data.store import Store
from ..data.transforms import resize
from ..models.encoder import Encoder
from .cache import FeatureCache

__all__ = ["iter_predictions", "predict_store_rows", "split_stats", "summarize_stats"]


@torch.no_grad()
def iter_predictions(
    model: Encoder,
    store: Store,
    subject: str,
    rows: np.ndarray,
    cache: FeatureCache | None = None,
    batch_size: int = 64,
    test: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(positions, predictions)`` chunks for a subject's images.

    Parameters
    ----------
    model : Encoder
    store : Store
    subject : str
    rows : ndarray of int64
        Rows of the subject's training images (or test images if ``test``).
    cache : FeatureCache, optional
        Use view 0 of the cached trunk features instead of running the trunk.
    batch_size : int, default=64
    test : bool, default=False

    Yields
    ------
    positions : ndarray of int64, shape (n,)
        Positions into ``rows``.
    predictions : ndarray of float32, shape (n, n_lh + n_rh)
        In the subject's challenge space, lh columns then rh.
    """
    model = getattr(model, "module", model)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    info = store.subject(subject)
    image_rows = (info.test_rows if test else info.train_rows)[rows]
    cols = torch.from_numpy(model.space.subject_columns(subject)).to(device)
    index = model.space.subject_index(subject)
    try:
        for start in range(0, len(rows), batch_size):
            stop = min(start + batch_size, len(rows))
            img_rows = image_rows[start:stop]
            subj = torch.full((stop - start,), index, dtype=torch.long, device=device)
            if cache is not None:
                feats = cache.get(np.zeros(stop - start, dtype=np.int64), cache.lookup(img_rows))
                out = model.readout([f.to(device) for f in feats], subj)
            else:
                images = torch.from_numpy(store.read_images(img_rows))
                x = resize(images, model.input_size).to(device)
                out = model(x, subj)
            yield np.arange(start, stop), out[:, cols].float().cpu().numpy()
    finally:
        model.train(was_training)


def split_stats(
    model: Encoder,
    store: Store,
    split: str,
    cache: FeatureCache | None = None,
    batch_size: int = 64,
) -> dict[str, StreamingStats]:
    """Per-subject streaming statistics of predictions vs fMRI on a split."""
    out = {}
    for name in store.names:
        rows = store.split_rows(name, split)
        stats = StreamingStats(store.fmri(name).shape[1])
        for pos, pred in iter_predictions(model, store, name, rows, cache, batch_size):
            stats.update(pred, store.read_fmri(name, rows[pos]))
        out[name] = stats
    return out


def summarize_stats(stats: dict[str, StreamingStats], prefix: str) -> dict[str, float]:
    """Median and mean R² and Pearson r, per subject and over all vertices."""
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


def predict_store_rows(
    model, store: Store, subject: str, rows: np.ndarray, batch_size: int = 64, test: bool = False
):
    """Yield (positions, predictions (n, n_lh + n_rh)) for training (or test) image rows."""
    from ..util.prefetch import prefetch

    info = store.subject(subject)
    image_rows = (info.test_rows if test else info.train_rows)[rows]
    starts = list(range(0, len(rows), batch_size))

    def read(start: int) -> np.ndarray:
        return store.read_images(image_rows[start : start + batch_size])

    for start, images in zip(starts, prefetch(read, starts)):  # reads overlap the model
        pred = model.predict(images, subject)
        n = images.shape[0]
        yield np.arange(start, start + n), np.concatenate([pred[h] for h in HEMIS], 1)
