"""``brainencoder adapt``: fit a new subject to a trained group model from few images.

A trained group model already holds what subjects share: the trunk, the layer
projections and the readout's shared parts. Adapting adds the new subject to
the encoder (:meth:`Encoder.add_subject`, starting at the average of the
existing subjects) and trains **only what the subject owns**: its gain and
offset, and its own copy of the readout's per-vertex tuning
(``point``: positions, widths, layer selector, feature weights; ``roi_query``:
every vertex's map of its region's outputs; the group-PCA readouts: the
subject's map), as a residual on the group's values pulled toward them by an
L2 penalty whose strength is chosen by K-fold cross-validation on the
subject's own images, the mean of that strength's fold fits kept
(:mod:`.adapt_train`, :mod:`.adapt_select`). It trains through ``train``'s loop
(:func:`~brainencoder.training.loop.run_epochs`: the same step, the same
best-epoch selection and early stopping) on cached trunk features of ``N`` of
its images, or of the images a list names (:mod:`.adapt_images`). Everything
else is frozen and in eval mode, so the other subjects' predictions are
bit-identical afterwards.

``N = 0`` is the zero-shot model: the group model's prediction at the new
subject's vertices, nothing trained. Every adapt scores it beside the adapted
model on the subject's ``val`` split (images never trained on).

The new subject's vertices that no training subject had grow the group space.
Readouts with per-vertex parameters (``point``, ``roi_query``) start those
vertices at the average vertex and train their rows alone (gradients of every
other row are masked); the group-PCA readouts predict them by a ridge
regression (alpha by 5-fold CV per vertex) from the subject's latent
(:meth:`Readout.finish_adaptation`).

The output is a run folder (``best.safetensors``, ``config.yaml`` with the
store and its identity, ``metrics.jsonl``, ``summary.json``) that ``evaluate``,
``predict``, ``plot``, ``report`` and ``submit`` accept like any run.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.prepare import PrepareOptions, prepare_store
from ..data.store import Store
from ..models.encoder import Encoder
from ..models.readouts.personal import personalize
from ..runs.ensemble import EnsembleModel
from ..runs.hub import resolve_source
from ..runs.load import load_model
from ..runs.provenance import add_subject_record, read_record, training_record
from ..runs.run import Run
from ..runs.stores import recorded_stores, store_record
from ..training.config import TrainConfig, parse_overrides
from ..util.errors import ConfigError, DataError
from ..util.typecheck import check_seed, from_mapping
from .adapt_images import choose_rows, listed_rows, read_image_list, split_rows
from .adapt_select import fit_subject

__all__ = [
    "TRAIN_KEYS",
    "AdaptConfig",
    "Overwrite",
    "adapt",
    "choose_rows",
    "load_adapt_config",
    "scores_line",
]

#: what ``images=`` takes: a list file, or the image file names themselves
Images = str | os.PathLike | Sequence[str]

logger = logging.getLogger(__name__)


#: TrainConfig's keys that adapt takes (with its own defaults): the shared loop's settings
TRAIN_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "early_stop_patience", "cache_dir")
#: what adapt's loop fixes: a constant learning rate, no clipping, every step logged (few)
_LOOP = {"warmup_frac": 0.0, "min_lr_frac": 1.0, "grad_clip": None, "amp": "none", "log_every": 1}


@dataclass
class AdaptConfig:
    """Training settings of ``adapt`` (``key=value`` overrides on the command line).

    ``adapt`` trains through ``train``'s loop: the keys that are also
    :class:`~brainencoder.training.config.TrainConfig`'s (``epochs``,
    ``batch_size``, ``lr``, ``weight_decay``, ``early_stop_patience``,
    ``cache_dir``) go into the TrainConfig it runs (:meth:`train_config`), and are
    checked by it; the others are adapt's own.

    Attributes
    ----------
    epochs : int
        At most this many epochs over the subject's training images.
    batch_size : int
        At least 2 (at most the training images are used).
    lr, weight_decay : float
        AdamW on the subject's own parameters, at a constant learning rate (no
        decay on the rows of tensors the subjects share).
    val_fraction : float
        With ``folds = 0``: the fraction of the ``N`` images held out to pick
        the best epoch and the pull.
    folds : int
        Choose the pull by this many folds of the ``N`` images (at most
        ``N // 2``), one fit per fold, and keep the mean of the chosen pull's
        fits (:mod:`.adapt_select`); 0: one fit per pull on the images but
        ``val_fraction`` of them, the best on those kept.
    early_stop_patience : int
        Stop after this many epochs without a better validation median r.
    ridge_alphas : list of float
        Candidate alphas of the ridge for vertices outside the group space.
    init : {"average", "default"}
        Start the subject's map at the mean of the existing subjects' maps, or
        at the readout's own initialisation.
    cache_dir : str or None
        Where the feature cache lives (default: inside the store).
    personal : bool
        Give the subject its own residual of the readout's per-vertex tuning
        (``point``, ``roi_query``; False: its gain and offset only, the
        adaptation of brainencoder before 0.x). The group-PCA readouts always
        train the subject's own map.
    pulls : list of float
        Strengths of the L2 pull of the subject's tuning toward the group's
        (:mod:`.adapt_train`): the best on the subject's images kept (``folds``).
    """

    epochs: int = 60
    batch_size: int = 32
    lr: float = 1e-2
    weight_decay: float = 0.01
    val_fraction: float = 0.15
    early_stop_patience: int = 10
    ridge_alphas: list[float] = field(default_factory=lambda: np.logspace(-2, 5, 15).tolist())
    init: str = "average"
    cache_dir: str | None = None
    personal: bool = True
    pulls: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0])
    folds: int = 5

    def train_config(self, seed: int = 0, n_train: int | None = None) -> TrainConfig:
        """The TrainConfig of the loop that trains the subject.

        Parameters
        ----------
        seed : int, default=0
            Data order of the epochs.
        n_train : int, optional
            Training images: the batch is at most that.

        Returns
        -------
        TrainConfig
            The :data:`TRAIN_KEYS` of this config, a constant learning rate, no
            gradient clipping, MSE, the validation median Pearson r selecting,
            a ``metrics.jsonl`` record every step.
        """
        shared = {key: getattr(self, key) for key in TRAIN_KEYS}
        if n_train is not None:
            shared["batch_size"] = min(self.batch_size, n_train)
        return TrainConfig(
            **shared, **_LOOP, val_metric="val/pearson_median", cache_features=True, seed=seed
        )

    def validate(self) -> None:
        """The shared keys as ``train`` checks them, then adapt's own; ConfigError naming it."""
        self.train_config().validate()
        if not 0 < self.val_fraction < 0.5:
            raise ConfigError(f"'val_fraction' must be in (0, 0.5); got {self.val_fraction}")
        if not self.ridge_alphas or min(self.ridge_alphas) <= 0:
            raise ConfigError("'ridge_alphas' must be positive numbers")
        if self.init not in ("average", "default"):
            raise ConfigError(f"'init' must be 'average' or 'default'; got {self.init!r}")
        if not self.pulls or min(self.pulls) < 0 or len(set(self.pulls)) != len(self.pulls):
            raise ConfigError(f"'pulls' must be distinct numbers >= 0; got {self.pulls}")
        if self.folds == 1 or self.folds < 0:
            raise ConfigError(f"'folds' must be 0 (one validation split) or >= 2; got {self.folds}")


def load_adapt_config(overrides: list[str] | None = None) -> AdaptConfig:
    """Defaults updated by ``key=value`` overrides, checked."""
    return from_mapping(AdaptConfig, parse_overrides(overrides or []))


def _open_data(data: Path, subject: str, store_dir: Path, image_size: int | None) -> Store:
    """A store holding ``subject``: the given store, or one prepared from a challenge folder."""
    if (data / "space.npz").exists() or (data / "manifest.json").exists():
        store = Store(data)
    else:
        from ..data.layout import find_subjects

        found = find_subjects(data)
        if subject not in found:
            raise DataError(f"{data}: no {subject} (subjects found: {', '.join(found)})")
        options = PrepareOptions(image_size=image_size or 256, split_mode="subject")
        store = prepare_store(data, store_dir, options, subjects=[subject], progress=False)
    if subject not in store.names:
        raise DataError(f"{data}: no {subject} (subjects in the store: {', '.join(store.names)})")
    if image_size is not None and store.image_size != image_size:
        raise DataError(
            f"{data}: images stored at {store.image_size} px, but the run was trained on a "
            f"store at {image_size} px; prepare the new subject with --image-size {image_size}"
        )
    return store


@dataclass(frozen=True)
class Overwrite:
    """What :func:`adapt` may replace (``--overwrite``, ``--overwrite-subject``)."""

    out: bool = False  # ``out``, if it is a run brainencoder wrote
    subject: bool = False  # the model's subject of that name (its vertices must match)


def adapt(
    run: str | Path,
    data: str | Path,
    subject: str,
    out: str | Path,
    n_images: int | Images | None = None,
    seed: int = 0,
    config: AdaptConfig | None = None,
    overwrite: Overwrite | None = None,
) -> dict[str, Any]:
    """Add ``subject`` to a trained model; returns the summary written to ``out``.

    Parameters
    ----------
    run : path
        Run folder, model file or exported folder (or ``hf:ORG/NAME``) of a trained
        encoder (any readout); an exported one needs neither its store nor its data.
    data : path
        Challenge-layout folder or prepared store holding ``subject``.
    subject : str
        The new subject's name (``subjXX`` in ``data``).
    out : path
        New run folder (written aside and moved into place when complete).
    n_images : int, path or sequence of str, optional
        Which of the subject's train-split images it trains on: a seeded random
        subset of this many (0: none, the zero-shot model; at least 10
        otherwise), or exactly the images a list file names (a path), or these
        image file names (``train-0001_nsd-00013.png``). Default: all.
    seed : int, default=0
    config : AdaptConfig, optional
    overwrite : Overwrite, optional
        Replace ``out``, or the model's subject of that name (default: neither).

    Returns
    -------
    dict
        Also ``out/summary.json``: validation metrics, the pull kept, the
        zero-shot and adapted scores on the subject's ``val`` split
        (``heldout/...``), images used, timings.
    """
    start = time.perf_counter()
    config, overwrite = config or AdaptConfig(), overwrite or Overwrite()
    config.validate()
    seed = check_seed("seed", seed)
    run, data, out = resolve_source(run), Path(data), Path(out)  # hf:ORG/NAME: its folder
    Run.check_target(out, [run, data], overwrite.out)
    model = _group_model(run, subject, overwrite)
    base = read_record(run)  # the group subjects keep what they trained on
    with Run.build(out, [run, data], overwrite=overwrite.out) as target:
        store = _open_data(data, subject, target.path / "store", model.store_image_size)
        inside = store.path.resolve().is_relative_to(target.path.resolve())
        train_rows, val_rows = _rows(store, subject, n_images, seed, config.val_fraction)
        added = _add_subject(model, subject, store, config, data)
        heldout = np.sort(store.split_rows(subject, "val"))
        rows = (train_rows, val_rows, heldout)
        summary = fit_subject(model, store, subject, rows, added, config, seed, target)
        model.training_record = add_subject_record(
            base, training_record(store, [subject], ["train"])
        )
        target.save_model(model, {"store_image_size": str(store.image_size)})
        settings = {"subject": subject, "n_images": int(train_rows.size + val_rows.size)}
        group, own = recorded_stores(run)
        own[subject] = store_record(store, (out / "store").absolute() if inside else None)
        target.write_header(
            "encoder",
            group,
            {"adapt": {**settings, "seed": seed, **asdict(config)}},
            subject_stores=own,
            adapted_from=str(run.absolute()),
        )
        summary["seconds"] = time.perf_counter() - start
        target.write_summary(summary)
    return summary


def _group_model(run: Path, subject: str, overwrite: Overwrite) -> Encoder:
    """The trained encoder to adapt; one-line errors for what cannot be adapted."""
    model = load_model(run)
    if isinstance(model, EnsembleModel):  # an exported ensemble
        raise ConfigError(
            f"{run}: an ensemble of {len(model.models)} models; adapt starts from one model: "
            "pass one of its runs, or a folder exported from one run"
        )
    if not isinstance(model, Encoder):
        raise ConfigError(
            f"{run}: adapt needs a trained encoder; a ridge baseline has no shared parts to "
            "adapt from (fit a ridge on the new subject instead)"
        )
    if subject in model.subjects and not overwrite.subject:
        raise ConfigError(
            f"{run}: the model already has a subject {subject!r}; adapt under another name "
            "(rename the folder) or pass --overwrite-subject to replace its parameters"
        )
    return model


def _rows(
    store: Store, subject: str, n_images: int | Images | None, seed: int, val_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """The subject's rows that train and that validate: N drawn, or those listed."""
    if n_images is None or isinstance(n_images, (int, np.integer)):
        return choose_rows(store, subject, n_images, seed, val_fraction)
    if isinstance(n_images, (str, os.PathLike)):
        entries, source = read_image_list(n_images), os.fspath(n_images)
    else:
        entries, source = [(i, str(n)) for i, n in enumerate(n_images, 1)], "images="
    chosen = listed_rows(store, subject, entries, source)
    return split_rows(chosen, subject, seed, val_fraction)


def _add_subject(
    model: Encoder, subject: str, store: Store, config: AdaptConfig, data: Path
) -> torch.Tensor:
    """The subject added to ``model`` (replacing its namesake); returns the added vertices."""
    masks = store.space.fsaverage_masks(subject)
    if subject in model.subjects:  # --overwrite-subject
        mine = model.space.fsaverage_masks(subject)
        if any(not np.array_equal(mine[h], masks[h]) for h in mine):
            raise ConfigError(
                f"{data}: {subject} has other vertices than the model's {subject}; adapt it "
                "under another name"
            )
        model.remove_subject(subject)
    others = model.subjects
    like = others if config.init == "average" and others else None
    added = model.add_subject(subject, masks, like=like)
    if config.personal and getattr(model.readout, "personal_tensors", ()):
        personalize(model.readout, subject)  # its own residual of the per-vertex tuning
        model.config.readout = model.readout.config()
    return added


def scores_line(summary: dict[str, Any]) -> str | None:
    """The zero-shot (N = 0) and adapted scores of a summary, as one line (None: not scored).

    Parameters
    ----------
    summary : dict
        What :func:`adapt` returns.

    Returns
    -------
    str or None
        E.g. ``subj04 val split (60 images), median r: zero-shot (N = 0) 0.412,
        adapted from 100 images 0.503 (pull 0.1)``.
    """
    zero = summary.get("heldout/zero_shot_pearson_median")
    if zero is None:
        return None
    n = summary["n_train_images"] + summary["n_val_images"]
    head = f"{summary['subject']} val split ({summary['heldout_images']} images), median r:"
    line = f"{head} zero-shot (N = 0) {zero:.3f}"
    if n:
        pull = summary.get("pull")
        kept = f" (pull {pull:g})" if pull is not None else ""
        line += f", adapted from {n} images {summary['heldout/adapted_pearson_median']:.3f}{kept}"
    return line
