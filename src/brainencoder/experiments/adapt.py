"""``brainencoder adapt``: fit a new subject to a trained group model from few images.

A trained group model already holds what subjects share: the trunk, the layer
projections and the readout's shared parts. Adapting adds the new subject to
the encoder (:meth:`Encoder.add_subject`) and trains **only what the readout
says the subject owns** (:meth:`Readout.adapt_parameters`: its own parameters,
starting from the average of the existing subjects'), through ``train``'s
loop (:func:`~brainencoder.training.loop.run_epochs`: the same step, the same
best-epoch selection and early stopping) on cached trunk features of ``N`` of
its images (:func:`~brainencoder.training.partial.setup_partial`). Everything
else is frozen and in eval mode, so the other subjects' predictions are
bit-identical afterwards.

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
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.metrics import StreamingStats
from ..data.loader import SampleIndex, StoreBatches
from ..data.prepare import PrepareOptions, prepare_store
from ..data.splits import make_splits
from ..data.store import Store
from ..inference.cache import CacheOptions, CacheSpec, build_feature_cache
from ..inference.store import summarize_stats
from ..models.encoder import Encoder
from ..runs.ensemble import EnsembleModel
from ..runs.hub import resolve_source
from ..runs.load import load_model
from ..runs.provenance import add_subject_record, read_record, training_record
from ..runs.run import Run
from ..runs.stores import recorded_stores, store_record
from ..training.config import TrainConfig, parse_overrides
from ..training.loop import run_epochs
from ..training.partial import rows_only, setup_partial
from ..training.selection import BestEpoch, BestParameters
from ..util.errors import ConfigError, DataError
from ..util.typecheck import check_seed, from_mapping

__all__ = ["TRAIN_KEYS", "AdaptConfig", "Overwrite", "adapt", "choose_rows", "load_adapt_config"]

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
    checked by it; the other three are adapt's own.

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
        Fraction of the ``N`` images held out to pick the best epoch.
    early_stop_patience : int
        Stop after this many epochs without a better validation median r.
    ridge_alphas : list of float
        Candidate alphas of the ridge for vertices outside the group space.
    init : {"average", "default"}
        Start the subject's map at the mean of the existing subjects' maps, or
        at the readout's own initialisation.
    cache_dir : str or None
        Where the feature cache lives (default: inside the store).
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


def choose_rows(
    store: Store, subject: str, n_images: int | None, seed: int, val_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded N of the subject's train-split rows (never a row evaluate scores): (train, val)."""
    pool = np.sort(store.split_rows(subject, "train"))
    if n_images is None:
        n_images = pool.size
    if n_images > pool.size:
        raise ConfigError(
            f"--n-images {n_images} is more than the {pool.size} training images of {subject} "
            "in its train split (its val and test-val images are kept for evaluation)"
        )
    if n_images < 10:
        raise ConfigError(f"--n-images must be at least 10; got {n_images}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    chosen = np.sort(rng.choice(pool, size=n_images, replace=False))
    parts = make_splits(n_images, (1 - val_fraction, val_fraction, 0.0), seed, key=subject)
    return chosen[parts["train"]], chosen[parts["val"]]


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
    n_images: int | None = None,
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
    n_images : int, optional
        Use a seeded random subset of this many training images (default: all).
    seed : int, default=0
    config : AdaptConfig, optional
    overwrite : Overwrite, optional
        Replace ``out``, or the model's subject of that name (default: neither).

    Returns
    -------
    dict
        Also ``out/summary.json``: validation metrics, images used, timings.
    """
    start = time.perf_counter()
    config, overwrite = config or AdaptConfig(), overwrite or Overwrite()
    config.validate()
    seed = check_seed("seed", seed)
    run, data, out = resolve_source(run), Path(data), Path(out)  # hf:ORG/NAME: its folder
    Run.check_target(out, [run, data], overwrite.out)
    model = load_model(run)
    base = read_record(run)  # the group subjects keep what they trained on
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
    with Run.build(out, [run, data], overwrite=overwrite.out) as target:
        store = _open_data(data, subject, target.path / "store", model.store_image_size)
        inside = store.path.resolve().is_relative_to(target.path.resolve())
        train_rows, val_rows = choose_rows(store, subject, n_images, seed, config.val_fraction)
        added = _add_subject(model, subject, store, config, data)
        summary = _train_subject(
            model, store, subject, (train_rows, val_rows), added, config, seed, target
        )
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
    return model.add_subject(subject, masks, like=like)


def _train_subject(
    model: Encoder,
    store: Store,
    subject: str,
    rows: tuple[np.ndarray, np.ndarray],
    added: torch.Tensor,
    config: AdaptConfig,
    seed: int,
    run: Run,
) -> dict[str, Any]:
    """Train the subject's parameters alone (``train``'s loop and step); best epoch kept."""
    train_rows, val_rows = rows
    readout = model.readout
    model.eval()  # dropout off, BatchNorm statistics fixed: nothing shared changes
    for p in model.parameters():
        p.requires_grad_(False)
    trained = readout.adapt_parameters(subject, added)
    t_cache = time.perf_counter()
    image_rows = store.subject(subject).train_rows
    used = np.concatenate([train_rows, val_rows])
    quiet = CacheOptions(progress=False)
    cache = build_feature_cache(
        model, store, image_rows[used], CacheSpec(seed=seed), root=config.cache_dir, options=quiet
    )
    t_cache = time.perf_counter() - t_cache
    exclude = None if readout.trains_added_vertices else added.numpy()
    index = store.subject(subject).index
    batches = StoreBatches(
        store,
        SampleIndex(np.full(train_rows.size, index), train_rows, image_rows[train_rows]),
        space=model.space,
        exclude=exclude,
    )
    features = {
        name: cache.get(np.zeros(r.size, np.int64), cache.lookup(image_rows[r]))
        for name, r in (("train", train_rows), ("val", val_rows))
    }
    columns = model.space.subject_columns(subject)
    scored = (
        ~np.isin(columns, added.numpy()) if exclude is not None else np.ones(columns.size, bool)
    )
    loop = config.train_config(seed, train_rows.size)
    with rows_only(trained, added):
        s = setup_partial(run, store, model, batches, cache, trained, int(added.numel()), loop)
        best = BestParameters([p for p, _ in trained])
        validate = _validation(model, store, subject, val_rows, features["val"], scored)
        selection = BestEpoch(loop.val_metric, validate, best.keep, loop.early_stop_patience)
        run_epochs(s, loop, selection, progress=False, checkpoints=False)
        best.restore()
    fitted = readout.finish_adaptation(
        subject,
        features["train"],
        torch.from_numpy(store.read_fmri(subject, train_rows)[:, ~scored]),
        torch.from_numpy(columns[~scored]),
        config.ridge_alphas,
    )
    return {
        "finished": True,
        "subject": subject,
        "n_train_images": int(train_rows.size),
        "n_val_images": int(val_rows.size),
        "best_epoch": s.state.best_epoch,
        "val/pearson_median": s.state.best,
        "added_vertices": int(added.numel()),
        "ridge_vertices": fitted,
        "feature_seconds": t_cache,
        "trainable_parameters": s.n_trainable,
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
