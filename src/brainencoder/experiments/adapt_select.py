"""How ``adapt`` chooses the pull and the epochs of a new subject's fit, and fits it.

Two ways (``AdaptConfig.folds``):

* ``folds >= 2`` (the default, 5): K-fold cross-validation on all the
  subject's adapt images. Per strength in ``AdaptConfig.pulls``, one fit per
  fold (early stopping on the held-out fold); the strength with the best mean
  score over folds is kept, and the subject's parameters become the mean of
  that strength's K fits (bagging: every image trains K - 1 of them, and the
  mean has less of each fit's noise than one fit on every image; measured in
  docs/experiments.md). The choice rests on every image rather than on a few.
* ``folds = 0``: one fit per strength on the images that train, the best
  epoch and strength chosen on the ``val_fraction`` held out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..data.store import Store
from ..models.encoder import Encoder
from .adapt_train import FitData, Pulled, fit_data, fit_once, subject_score, subset, tuning_tensors

if TYPE_CHECKING:
    from ..runs.run import Run
    from .adapt import AdaptConfig

__all__ = ["fit_subject"]

logger = logging.getLogger(__name__)


@contextmanager
def _epochs_quiet() -> Iterator[None]:
    """The epoch loop's per-epoch lines hidden (K folds x pulls fits), its warnings kept."""
    log = logging.getLogger("brainencoder.training.loop")
    level = log.level
    log.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        log.setLevel(level)


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
    """Fit the subject's own parameters at the pull and epochs chosen on its images.

    Parameters
    ----------
    model : Encoder
        With ``subject`` added (and personalized); frozen but for what it owns.
    store : Store
    subject : str
    rows : (ndarray, ndarray, ndarray) of int64
        The subject's training rows that train, that validate (with
        ``folds = 0``: pick the epoch and the pull; else both train and are
        split into folds), and that are scored before and after (its ``val``
        split); the first two are empty for the zero-shot model.
    added : LongTensor of shape (n_added,)
        The vertices the subject added to the group space.
    config : AdaptConfig
    seed : int
        Also the folds' draw.
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
    data = fit_data(model, store, subject, rows, added, config, seed)
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
        summary.update(_fit(_Task.of(model, store, data, added, run), config, seed))
    if heldout is not None:
        adapted = subject_score(model, data.features["heldout"], heldout, subject)
        summary["heldout/adapted_pearson_median"] = adapted["pearson_median"]
        summary["heldout_images"] = int(rows[2].size)
    return summary


@dataclass
class _Task:
    """One adapt's model, data and trained parameters; a fit from their start."""

    model: Encoder
    store: Store
    data: FitData
    added: torch.Tensor
    run: Run
    trained: list[tuple[nn.Parameter, int | None]]
    tensors: list[tuple[nn.Parameter, float]]
    start: list[torch.Tensor]
    anchor: list[torch.Tensor]

    @classmethod
    def of(cls, model: Encoder, store: Store, data: FitData, added: torch.Tensor, run: Run):
        """The task of ``data``'s subject, its parameters at their start values."""
        trained = model.readout.adapt_parameters(data.subject, added)
        tensors = tuning_tensors(model, data.subject)
        start = [p.detach().clone() for p, _ in trained]
        anchor = [p.detach().clone() for p, _ in tensors]
        return cls(model, store, data, added, run, trained, tensors, start, anchor)

    def set(self, values: list[torch.Tensor]) -> None:
        """Copy ``values`` into the trained parameters."""
        with torch.no_grad():
            for (p, _), value in zip(self.trained, values, strict=True):
                p.copy_(value)

    def fit(self, data: FitData, pull: float, loop: Any) -> Any:
        """A fit at ``pull`` from the start on ``data``'s rows; its TrainSetup."""
        self.set(self.start)
        n_columns = int(self.model.space.subject_columns(data.subject).size)
        pulled = Pulled(self.model.readout, self.tensors, self.anchor, float(pull), n_columns)
        return fit_once(
            self.model, self.store, data, self.trained, self.added, pulled, loop, self.run
        )


def _fit(task: _Task, config: AdaptConfig, seed: int) -> dict[str, Any]:
    """Choose the pull and fit; then the vertices outside the group space (PCA readouts)."""
    pulls = [float(p) for p in (config.pulls if task.tensors else config.pulls[:1])]
    if config.folds:
        kept = _by_folds(task, pulls, config, seed)
    else:
        kept = _by_validation(task, pulls, config, seed)
    data, model, subject = task.data, task.model, task.data.subject  # folds: every image trained
    columns = model.space.subject_columns(subject)
    fitted = model.readout.finish_adaptation(
        subject,
        data.features["train"],
        torch.from_numpy(task.store.read_fmri(subject, data.train_rows)[:, ~data.scored]),
        torch.from_numpy(columns[~data.scored]),
        config.ridge_alphas,
    )
    if not task.tensors:
        kept.update({"pull": None, "pull_scores": {}})
    return {**kept, "personal_tuning": bool(task.tensors), "ridge_vertices": fitted}


def _by_validation(
    task: _Task, pulls: list[float], config: AdaptConfig, seed: int
) -> dict[str, Any]:
    """Every pull's fit on the training rows; the best on the validation rows kept."""
    loop = config.train_config(seed, task.data.train_rows.size)
    scores: dict[str, float] = {}
    fits = []
    for pull in pulls:
        s = task.fit(task.data, pull, loop)
        scores[f"{pull:g}"] = float(s.state.best)
        fits.append((pull, s, [p.detach().clone() for p, _ in task.trained]))
    pull, s, values = max(fits, key=lambda fit: fit[1].state.best)  # the first of equals
    task.set(values)
    return {
        "best_epoch": s.state.best_epoch,
        "val/pearson_median": s.state.best,
        "pull": pull,
        "pull_scores": scores,
        "trainable_parameters": s.n_trainable,
    }


def _by_folds(task: _Task, pulls: list[float], config: AdaptConfig, seed: int) -> dict[str, Any]:
    """K-fold choice of the pull; the subject's parameters are the mean of its folds' fits."""
    data = task.data
    rows = np.sort(np.concatenate([data.train_rows, data.val_rows]))
    k = min(config.folds, rows.size // 2)
    folds = np.array_split(np.random.default_rng(seed).permutation(rows), k)
    scores: dict[str, float] = {}
    fits: dict[float, list[Any]] = {}
    for pull in pulls:
        fits[pull] = []
        for fold in folds:
            part = subset(task.model, task.store, data, np.setdiff1d(rows, fold), np.sort(fold))
            with _epochs_quiet():
                s = task.fit(part, pull, config.train_config(seed, part.train_rows.size))
            fits[pull].append((s, [p.detach().clone() for p, _ in task.trained]))
        scores[f"{pull:g}"] = float(np.mean([s.state.best for s, _ in fits[pull]]))
        epochs = [
            None if s.state.best_epoch is None else s.state.best_epoch + 1 for s, _ in fits[pull]
        ]
        logger.info(
            "pull %g: mean best val/pearson_median %.4f over %d folds (best epochs %s)",
            pull, scores[f"{pull:g}"], k, epochs,
        )  # fmt: skip
    pull = max(pulls, key=lambda p: scores[f"{p:g}"])  # the first of equals
    # the mean change from the start: rows no fold changed stay bit-identical
    values = zip(*(v for _, v in fits[pull]), strict=True)
    task.set([p0 + torch.stack([v - p0 for v in vs]).mean(0) for p0, vs in zip(task.start, values)])
    task.data = subset(task.model, task.store, data, rows, rows[:0])
    epochs = [s.state.best_epoch for s, _ in fits[pull]]
    return {
        "best_epoch": int(np.median(epochs)),
        "val/pearson_median": scores[f"{pull:g}"],
        "pull": pull,
        "pull_scores": scores,
        "folds": k,
        "trainable_parameters": fits[pull][0][0].n_trainable,
    }
