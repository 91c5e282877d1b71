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
``position_speed``). One fit per strength in ``AdaptConfig.pulls``, each
from the same start through ``train``'s loop
(:func:`~brainencoder.training.loop.run_epochs`, best epoch kept); the strength
whose best epoch scores highest on the subject's validation images is kept.
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

__all__ = ["Pulled", "fit_subject", "subject_score", "tuning_tensors"]


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
class _Data:
    """What every fit of one adapt shares: rows, features, batches, the vertices scored."""

    subject: str
    train_rows: np.ndarray
    val_rows: np.ndarray
    features: dict[str, list[torch.Tensor]]
    batches: StoreBatches
    cache: Any
    scored: np.ndarray
    seconds: float


def _data(
    model: Encoder,
    store: Store,
    subject: str,
    rows: tuple[np.ndarray, np.ndarray, np.ndarray],
    added: torch.Tensor,
    config: AdaptConfig,
    seed: int,
) -> _Data:
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
    index = store.subject(subject).index
    batches = StoreBatches(
        store,
        SampleIndex(np.full(train_rows.size, index), train_rows, image_rows[train_rows]),
        space=model.space,
        exclude=exclude,
    )
    features = {
        name: cache.get(np.zeros(r.size, np.int64), cache.lookup(image_rows[r]))
        for name, r in (("train", train_rows), ("val", val_rows), ("heldout", heldout))
    }
    columns = model.space.subject_columns(subject)
    scored = (
        ~np.isin(columns, added.numpy()) if exclude is not None else np.ones(columns.size, bool)
    )
    seconds = time.perf_counter() - start
    return _Data(subject, train_rows, val_rows, features, batches, cache, scored, seconds)


def _fit_once(
    model: Encoder,
    store: Store,
    data: _Data,
    trained: Sequence[tuple[nn.Parameter, int | None]],
    added: torch.Tensor,
    pulled: Pulled,
    loop: Any,
    run: Run,
) -> Any:
    """One fit at one pull strength from the current (start) values; best epoch restored.

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
        selection = BestEpoch(loop.val_metric, validate, best.keep, loop.early_stop_patience)
        run_epochs(s, loop, selection, progress=False, checkpoints=False)
        best.restore()
    return s


def fit_subject(
    model: Encoder,
    store: Store,
    subject: str,
    rows: tuple[np.ndarray, np.ndarray, np.ndarray],
    added: torch.Tensor,
    config: AdaptConfig,
    seed: int,
    run: Run,
) -> dict[str, Any]:
    """Fit the subject's own parameters at each pull; keep the best on its validation images.

    Parameters
    ----------
    model : Encoder
        With ``subject`` added (and personalized); frozen but for what it owns.
    store : Store
    subject : str
    rows : (ndarray, ndarray, ndarray) of int64
        The subject's training rows that train, that validate (pick the epoch
        and the pull), and that are scored before and after (its ``val``
        split); the first two are empty for the zero-shot model.
    added : LongTensor of shape (n_added,)
        The vertices the subject added to the group space.
    config : AdaptConfig
    seed : int
    run : Run
        Where ``metrics.jsonl`` goes.

    Returns
    -------
    dict
        The summary's training part: images, best epoch and score, the pull
        kept and every pull's score, and the zero-shot and adapted scores on
        the held-out rows (``heldout/...``).
    """
    model.eval()  # dropout off, BatchNorm statistics fixed: nothing shared changes
    for p in model.parameters():
        p.requires_grad_(False)
    data = _data(model, store, subject, rows, added, config, seed)
    heldout = store.read_fmri(subject, rows[2]) if rows[2].size else None
    summary: dict[str, Any] = {"finished": True, "subject": subject}
    if heldout is not None:
        zero = subject_score(model, data.features["heldout"], heldout, subject)
        summary["heldout/zero_shot_pearson_median"] = zero["pearson_median"]
    summary.update(
        {"n_train_images": int(data.train_rows.size), "n_val_images": int(data.val_rows.size)}
    )
    summary.update({"added_vertices": int(added.numel()), "feature_seconds": data.seconds})
    if data.train_rows.size:
        summary.update(_fit_pulls(model, store, subject, data, added, config, seed, run))
    if heldout is not None:
        adapted = subject_score(model, data.features["heldout"], heldout, subject)
        summary["heldout/adapted_pearson_median"] = adapted["pearson_median"]
        summary["heldout_images"] = int(rows[2].size)
    return summary


def _fit_pulls(
    model: Encoder,
    store: Store,
    subject: str,
    data: _Data,
    added: torch.Tensor,
    config: AdaptConfig,
    seed: int,
    run: Run,
) -> dict[str, Any]:
    """Every pull's fit from the same start; the best one's parameters kept, then the ridge."""
    readout = model.readout
    trained = readout.adapt_parameters(subject, added)
    tensors = tuning_tensors(model, subject)
    start = [p.detach().clone() for p, _ in trained]
    anchor = [p.detach().clone() for p, _ in tensors]
    n_columns = int(model.space.subject_columns(subject).size)
    loop = config.train_config(seed, data.train_rows.size)
    pulls = list(config.pulls) if tensors else list(config.pulls[:1])
    scores: dict[str, float] = {}
    kept: tuple[float, Any, list[torch.Tensor]] | None = None
    for pull in pulls:
        with torch.no_grad():
            for (p, _), value in zip(trained, start, strict=True):
                p.copy_(value)
        pulled = Pulled(readout, tensors, anchor, float(pull), n_columns)
        s = _fit_once(model, store, data, trained, added, pulled, loop, run)
        scores[f"{pull:g}"] = float(s.state.best)
        if kept is None or s.state.best > kept[1].state.best:
            kept = (float(pull), s, [p.detach().clone() for p, _ in trained])
    pull, s, values = kept
    with torch.no_grad():
        for (p, _), value in zip(trained, values, strict=True):
            p.copy_(value)
    columns = model.space.subject_columns(subject)
    fitted = readout.finish_adaptation(
        subject,
        data.features["train"],
        torch.from_numpy(store.read_fmri(subject, data.train_rows)[:, ~data.scored]),
        torch.from_numpy(columns[~data.scored]),
        config.ridge_alphas,
    )
    return {
        "best_epoch": s.state.best_epoch,
        "val/pearson_median": s.state.best,
        "pull": pull if tensors else None,
        "pull_scores": scores if tensors else {},
        "personal_tuning": bool(tensors),
        "ridge_vertices": fitted,
        "trainable_parameters": s.n_trainable,
    }
