"""How ``adapt`` trains a new subject: its own tuning, pulled toward the group's.

The readout names what the subject owns (:meth:`Readout.adapt_parameters`):
its gain and offset, the rows of its added vertices, and, where the readout has
per-vertex tuning (``point``, ``roi_query``), a residual of that tuning
(:mod:`brainencoder.models.readouts.personal`), or its whole map where the
readout already gives every subject one (the group-PCA readouts). The tuning
starts at the group's values (zero residuals; the average of the other
subjects' maps) and an L2 pull toward that start is added to the loss::

    pull * sum over tuning tensors of ||(value - start) * scale||^2 / n_subject_vertices

(the residuals are in the units the readout uses them in: ``point``'s
positions and widths in map units, though it stores its own divided by
``position_speed``). A fit (:func:`fit_once`) runs from the start through
``train``'s loop (:func:`~brainencoder.training.loop.run_epochs`, best epoch
kept); :mod:`.adapt_select` chooses the strength and the epochs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..core.metrics import StreamingStats
from ..data.loader import SampleIndex, StoreBatches
from ..data.store import Store
from ..inference.cache import CacheOptions, CacheSpec, build_feature_cache
from ..inference.store import summarize_stats
from ..models.encoder import Encoder
from ..models.readouts.personal import PersonalAffine
from ..training.loop import run_epochs
from ..training.partial import rows_only, setup_partial
from ..training.selection import BestEpoch, BestParameters

if TYPE_CHECKING:
    from ..runs.run import Run
    from .adapt import AdaptConfig

__all__ = ["FitData", "Pulled", "fit_data", "fit_once", "subject_score", "subset", "tuning_tensors"]


def tuning_tensors(model: Encoder, subject: str) -> list[tuple[nn.Parameter, float]]:
    """The subject's tuning that the L2 pull acts on, each with its scale.

    Parameters
    ----------
    model : Encoder
    subject : str

    Returns
    -------
    list of (Parameter, float)
        A personal subject's residuals (scale 1: they are stored in the units
        the readout uses them in); else the subject's own parameters but its
        gain and offset (the group-PCA readouts' per-subject map).
    """
    module = model.readout.per_subject[subject]
    if isinstance(module, PersonalAffine):  # residuals in the tensors' own units
        return [(module.residual(n), 1.0) for n in module.tuned]
    return [(p, 1.0) for n, p in module.named_parameters() if n not in ("gain", "offset")]


@dataclass
class Pulled:
    """The readout as the training step sees it: its regularizer plus the L2 pull.

    Attributes
    ----------
    base : Readout
        (Not ``readout``: the step calls ``model.readout.regularizer()`` where
        its model has one.)
    tensors : list of (Parameter, float)
        What is pulled, with its scale (:func:`tuning_tensors`).
    start : list of Tensor
        Their starting values (the group's).
    pull : float
    n_vertices : int
        The subject's vertices (the penalty is per vertex, as the loss).
    """

    base: nn.Module
    tensors: list[tuple[nn.Parameter, float]]
    start: list[torch.Tensor]
    pull: float
    n_vertices: int

    def penalty(self) -> torch.Tensor:
        """``pull`` times the scaled squared distance to the start, per subject vertex."""
        total = self.start[0].new_zeros(()) if self.start else torch.zeros(())
        for (p, scale), p0 in zip(self.tensors, self.start, strict=True):
            total = total + (((p - p0) * scale) ** 2).sum()
        return self.pull * total / max(self.n_vertices, 1)

    def regularizer(self) -> torch.Tensor:
        """The readout's own penalty plus the pull."""
        return self.base.regularizer() + self.penalty()


def subject_score(
    model: Encoder, features: list[torch.Tensor], target: np.ndarray, subject: str
) -> dict[str, float]:
    """The subject's median Pearson r (and R²) on some images, over all its vertices.

    Parameters
    ----------
    model : Encoder
    features : list of Tensor of shape (N, C_l, *positions_l)
        The images' trunk features.
    target : ndarray of shape (N, n_subject_vertices)
    subject : str

    Returns
    -------
    dict of str to float
        ``pearson_median`` and ``r2_median``.
    """
    columns = model.space.subject_columns(subject)
    index = model.space.subject_index(subject)
    with torch.no_grad():
        subj = torch.full((target.shape[0],), index, dtype=torch.long)
        pred = model.readout(features, subj)[:, columns].numpy()
    stats = StreamingStats(columns.size)
    stats.update(pred, target)
    return {
        "pearson_median": float(np.median(stats.pearson())),
        "r2_median": float(np.median(stats.r2())),
    }


def _validation(
    model: Encoder,
    store: Store,
    subject: str,
    val_rows: np.ndarray,
    features: list[torch.Tensor],
    scored: np.ndarray,
) -> Callable[[int], dict[str, float]]:
    """An epoch's validation: the subject's metrics on its held-out rows and ``scored`` vertices."""
    target = store.read_fmri(subject, val_rows)
    columns = model.space.subject_columns(subject)
    index = model.space.subject_index(subject)

    def validate(epoch: int) -> dict[str, float]:
        with torch.no_grad():
            subj = torch.full((val_rows.size,), index, dtype=torch.long)
            pred = model.readout(features, subj)[:, columns].numpy()
        stats = StreamingStats(int(scored.sum()))
        stats.update(pred[:, scored], target[:, scored])
        return summarize_stats({subject: stats}, "val")

    return validate


@dataclass
class FitData:
    """What a fit trains and validates on: rows, features, batches, the vertices scored."""

    subject: str
    train_rows: np.ndarray
    val_rows: np.ndarray
    features: dict[str, list[torch.Tensor]]
    batches: StoreBatches
    cache: Any
    scored: np.ndarray
    seconds: float


def fit_data(
    model: Encoder,
    store: Store,
    subject: str,
    rows: tuple[np.ndarray, np.ndarray, np.ndarray],
    added: torch.Tensor,
    config: AdaptConfig,
    seed: int,
) -> FitData:
    """Cache the trunk features of the subject's used (and held-out) images; the batches."""
    train_rows, val_rows, heldout = rows
    start = time.perf_counter()
    image_rows = store.subject(subject).train_rows
    used = np.concatenate([train_rows, val_rows, heldout])
    cache = build_feature_cache(
        model,
        store,
        image_rows[used],
        CacheSpec(seed=seed),
        root=config.cache_dir,
        options=CacheOptions(progress=False),
    )
    exclude = None if model.readout.trains_added_vertices else added.numpy()
    features = {"heldout": _features(store, subject, cache, heldout)}
    columns = model.space.subject_columns(subject)
    scored = (
        ~np.isin(columns, added.numpy()) if exclude is not None else np.ones(columns.size, bool)
    )
    data = FitData(subject, train_rows, val_rows, features, None, cache, scored, 0.0)
    data = subset(model, store, data, train_rows, val_rows)
    data.seconds = time.perf_counter() - start
    return data


def _features(store: Store, subject: str, cache: Any, rows: np.ndarray) -> list[torch.Tensor]:
    """The cached trunk features of the subject's training-split ``rows``."""
    image_rows = store.subject(subject).train_rows[rows]
    return cache.get(np.zeros(rows.size, np.int64), cache.lookup(image_rows))


def subset(
    model: Encoder, store: Store, data: FitData, train_rows: np.ndarray, val_rows: np.ndarray
) -> FitData:
    """``data`` (its cache, held-out features, scored vertices) on other rows.

    Parameters
    ----------
    model : Encoder
    store : Store
    data : FitData
    train_rows, val_rows : ndarray of int64
        The subject's training-split rows to train on and to validate on (may be empty).

    Returns
    -------
    FitData
    """
    subject = data.subject
    image_rows = store.subject(subject).train_rows
    index = store.subject(subject).index
    batches = StoreBatches(
        store,
        SampleIndex(np.full(train_rows.size, index), train_rows, image_rows[train_rows]),
        space=model.space,
        exclude=model.space.subject_columns(subject)[~data.scored],
    )
    features = {
        **data.features,
        "train": _features(store, subject, data.cache, train_rows),
        "val": _features(store, subject, data.cache, val_rows),
    }
    return replace(
        data, train_rows=train_rows, val_rows=val_rows, features=features, batches=batches
    )


def fit_once(
    model: Encoder,
    store: Store,
    data: FitData,
    trained: Sequence[tuple[nn.Parameter, int | None]],
    added: torch.Tensor,
    pulled: Pulled,
    loop: Any,
    run: Run,
) -> Any:
    """One fit at one pull strength from the current (start) values; best epoch restored.

    Without validation rows, every epoch of ``loop`` runs and the last is kept.
    Returns the :class:`~brainencoder.training.state.TrainSetup` it ran.
    """
    with rows_only(trained, added):
        s = setup_partial(
            run, store, model, data.batches, data.cache, trained, int(added.numel()), loop
        )
        s.step = replace(s.step, model=pulled)  # the loss adds the pull to the regularizer
        best = BestParameters([p for p, _ in trained])
        validate = _validation(
            model, store, data.subject, data.val_rows, data.features["val"], data.scored
        )
        metric = loop.val_metric if data.val_rows.size else None
        selection = BestEpoch(metric, validate, best.keep, loop.early_stop_patience)
        run_epochs(s, loop, selection, progress=False, checkpoints=False)
        best.restore()
    return s
