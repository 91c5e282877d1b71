"""``brainencoder adapt``: fit a new subject to a trained group model from few images.

A trained group model already holds what subjects share: the trunk, the layer
projections and the readout's shared parts. Adapting adds the new subject to
the encoder (:meth:`Encoder.add_subject`) and trains **only what the readout
says the subject owns** (:meth:`Readout.adapt_parameters`: its own parameters,
starting from the average of the existing subjects'), with the training
engine of ``train`` (:class:`~brainencoder.training.step.TrainStep`) on cached
trunk features of ``N`` of its images. Everything else is frozen and in eval
mode, so the other subjects' predictions are bit-identical afterwards.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.metrics import StreamingStats
from ..data.loader import EpochBatchSampler, SampleIndex, StoreBatches
from ..data.prepare import prepare_store
from ..data.splits import make_splits
from ..data.store import Store
from ..inference.cache import build_feature_cache
from ..inference.store import summarize_stats
from ..models.encoder import Encoder
from ..runs.load import load_model
from ..runs.provenance import add_subject_record, read_record, training_record
from ..runs.run import Run
from ..runs.stores import recorded_stores, store_record
from ..training.config import TrainConfig, parse_overrides
from ..training.distributed import DistInfo
from ..training.losses import create_loss
from ..training.step import TrainStep
from ..util.errors import ConfigError, DataError
from ..util.typecheck import check_seed, from_mapping

__all__ = ["AdaptConfig", "adapt", "choose_rows", "load_adapt_config"]

logger = logging.getLogger(__name__)


@dataclass
class AdaptConfig:
    """Training settings of ``adapt`` (``key=value`` overrides on the command line).

    Attributes
    ----------
    epochs : int
        At most this many epochs over the subject's training images.
    batch_size : int
    lr, weight_decay : float
        AdamW on the subject's own parameters.
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

    def validate(self) -> None:
        for key in ("epochs", "batch_size", "early_stop_patience"):
            if getattr(self, key) < 1:
                raise ConfigError(f"'{key}' must be >= 1; got {getattr(self, key)}")
        if not 0 < self.lr <= 1 or self.weight_decay < 0:
            raise ConfigError("'lr' must be in (0, 1] and 'weight_decay' >= 0")
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
        store = prepare_store(
            data,
            store_dir,
            image_size=image_size or 256,
            subjects=[subject],
            split_mode="subject",
            progress=False,
        )
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


def adapt(
    run: str | Path,
    data: str | Path,
    subject: str,
    out: str | Path,
    n_images: int | None = None,
    seed: int = 0,
    config: AdaptConfig | None = None,
    overwrite: bool = False,
    overwrite_subject: bool = False,
) -> dict[str, Any]:
    """Add ``subject`` to a trained model; returns the summary written to ``out``.

    Parameters
    ----------
    run : path
        Run folder or model file of a trained encoder (any readout).
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
    overwrite : bool, default=False
        Replace ``out`` if it is a run brainencoder wrote.
    overwrite_subject : bool, default=False
        Replace the model's subject of that name (its vertices must match).

    Returns
    -------
    dict
        Also ``out/summary.json``: validation metrics, images used, timings.
    """
    start = time.perf_counter()
    config = config or AdaptConfig()
    config.validate()
    seed = check_seed("seed", seed)
    run, data, out = Path(run), Path(data), Path(out)
    Run.check_target(out, [run, data], overwrite)
    model = load_model(run)
    base = read_record(run)  # the group subjects keep what they trained on
    if not isinstance(model, Encoder):
        raise ConfigError(
            f"{run}: adapt needs a trained encoder; a ridge baseline has no shared parts to "
            "adapt from (fit a ridge on the new subject instead)"
        )
    if subject in model.subjects and not overwrite_subject:
        raise ConfigError(
            f"{run}: the model already has a subject {subject!r}; adapt under another name "
            "(rename the folder) or pass --overwrite-subject to replace its parameters"
        )
    with Run.build(out, [run, data], overwrite=overwrite) as target:
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
    """Train the subject's parameters alone (the same step as ``train``); best epoch kept."""
    train_rows, val_rows = rows
    readout = model.readout
    model.eval()  # dropout off, BatchNorm statistics fixed: nothing shared changes
    for p in model.parameters():
        p.requires_grad_(False)
    trained = readout.adapt_parameters(subject, added)
    hooks = [_train_rows_only(p, axis, added) for p, axis in trained]
    t_cache = time.perf_counter()
    image_rows = store.subject(subject).train_rows
    used = np.concatenate([train_rows, val_rows])
    cache = build_feature_cache(
        model, store, image_rows[used], 1, seed=seed, root=config.cache_dir, progress=False
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
    batch_size = min(config.batch_size, train_rows.size)
    step_config = TrainConfig(
        batch_size=batch_size, lr=config.lr, grad_clip=None, seed=seed, amp="none"
    )
    optimizer = torch.optim.AdamW(
        [
            {
                "params": [p for p, axis in trained if axis is None],
                "weight_decay": config.weight_decay,
            },
            # rows of shared tensors: AdamW's decay would shrink every other row too
            {"params": [p for p, axis in trained if axis is not None], "weight_decay": 0.0},
        ],
        lr=config.lr,
    )
    step = TrainStep(
        module=readout,
        model=readout,
        batches=batches,
        cache=cache,
        loss=create_loss({"name": "mse"}),
        optimizer=optimizer,
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        config=step_config,
        device=torch.device("cpu"),
        info=DistInfo(),
    )
    features = {
        name: cache.get(np.zeros(r.size, np.int64), cache.lookup(image_rows[r]))
        for name, r in (("train", train_rows), ("val", val_rows))
    }
    val_target = store.read_fmri(subject, val_rows)
    columns = model.space.subject_columns(subject)
    scored = (
        ~np.isin(columns, added.numpy()) if exclude is not None else np.ones(columns.size, bool)
    )
    subject_index = model.space.subject_index(subject)
    sampler = EpochBatchSampler(train_rows.size, batch_size, seed, drop_last=False)
    best, best_state, best_epoch, since, n_steps = -np.inf, None, -1, 0, 0
    for epoch in range(config.epochs):
        sampler.set_epoch(epoch)
        losses = []
        for positions in sampler:
            losses.append(step(positions, epoch, n_steps))
            n_steps += 1
        with torch.no_grad():
            subj = torch.full((val_rows.size,), subject_index, dtype=torch.long)
            pred = readout(features["val"], subj)[:, columns].numpy()
        stats = StreamingStats(int(scored.sum()))
        stats.update(pred[:, scored], val_target[:, scored])
        metrics = summarize_stats({subject: stats}, "val")
        value = metrics["val/pearson_median"]
        run.append_metrics(
            {"step": n_steps, "epoch": epoch, "train/loss": float(np.mean(losses)), **metrics}
        )
        if value > best:
            best, best_epoch, since = value, epoch, 0
            best_state = [p.detach().clone() for p, _ in trained]
        else:
            since += 1
            if since >= config.early_stop_patience:
                break
    with torch.no_grad():
        for (p, _), value in zip(trained, best_state):
            p.copy_(value)
    for hook in hooks:
        if hook is not None:
            hook.remove()
    for p, _ in trained:
        p.requires_grad_(False)
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
        "best_epoch": best_epoch,
        "val/pearson_median": best,
        "added_vertices": int(added.numel()),
        "ridge_vertices": fitted,
        "feature_seconds": t_cache,
        "trainable_parameters": sum(
            p.numel() if axis is None else p.numel() // p.shape[axis] * int(added.numel())
            for p, axis in trained
        ),
    }


def _train_rows_only(p: torch.nn.Parameter, axis: int | None, rows: torch.Tensor):
    """Let only ``rows`` along ``axis`` of ``p`` get gradients (None: all of it); the hook."""
    p.requires_grad_(True)
    if axis is None:
        return None
    shape = [1] * p.ndim
    shape[axis] = p.shape[axis]
    keep = torch.zeros(p.shape[axis], dtype=p.dtype, device=p.device)
    keep[rows.to(p.device)] = 1
    keep = keep.view(shape)
    return p.register_hook(lambda grad: grad * keep)
