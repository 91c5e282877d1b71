"""``brainencoder adapt``: fit a new subject to a trained group model from few images.

A trained group model already holds what subjects share: the trunk, the layer
projections, the shared map and the group-PCA space. Adapting adds the new
subject to the readout and trains **only its own parameters** (its subject
map and bias), starting from the average of the existing subjects' maps, on
cached trunk features of ``N`` of its images. Everything else is frozen and in
eval mode, so the other subjects' predictions are bit-identical afterwards.

The new subject's vertices that lie outside the model's group space (no
training subject had them) get an explicit treatment: the space grows by those
vertices and each is predicted by a ridge regression (alpha by 5-fold CV per
vertex) from the subject's latent (the input of the frozen embedding) to its
responses there. The PCA block of the other vertices is untouched.

The output is a run folder (``best.safetensors``, ``config.yaml`` with the
store and its identity, ``metrics.jsonl``, ``summary.json``) that ``evaluate``,
``predict``, ``plot``, ``report`` and ``submit`` accept like any run.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from . import __version__
from .data.prepare import prepare_store
from .data.splits import make_splits
from .data.store import Store
from .errors import ConfigError, DataError
from .evaluation import summarize_stats
from .features import build_feature_cache
from .fileio import write_bytes_atomic, write_json_atomic
from .metrics import StreamingStats
from .models.encoder import Encoder
from .models.modelfile import save_encoder
from .ownership import check_output_location, mark_owned, replace_owned
from .train.checkpoint import RunDir, git_revision
from .train.config import parse_overrides
from .typecheck import from_mapping

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
        from .data.layout import find_subjects

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
    """Seeded N of the subject's train+val rows, split into (train, val); test-val untouched."""
    pool = np.sort(np.concatenate([store.split_rows(subject, s) for s in ("train", "val")]))
    if n_images is None:
        n_images = pool.size
    if n_images > pool.size:
        raise ConfigError(
            f"--n-images {n_images} is more than the {pool.size} training images of {subject} "
            "(its test-val images are kept for evaluation)"
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
        Run folder or model file of a trained encoder with a group-PCA readout.
    data : path
        Challenge-layout folder or prepared store holding ``subject``.
    subject : str
        The new subject's name (``subjXX`` in ``data``).
    out : path
        New run folder.
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
    from .runs import load_run_model

    start = time.perf_counter()
    config = config or AdaptConfig()
    config.validate()
    run, data, out = Path(run), Path(data), Path(out)
    check_output_location(out, [run, data])
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out} already holds files; pass --overwrite to replace it")
        replace_owned(out, "run", [run, data])
    model = load_run_model(run)
    if not isinstance(model, Encoder) or not hasattr(model.readout, "extend_vertices"):
        raise ConfigError(f"{run}: adapt needs an encoder with a group-PCA readout")
    if subject in model.space.subjects and not overwrite_subject:
        raise ConfigError(
            f"{run}: the model already has a subject {subject!r}; adapt under another name "
            "(rename the folder) or pass --overwrite-subject to replace its parameters"
        )
    out.mkdir(parents=True, exist_ok=True)
    mark_owned(out, "run")
    store = _open_data(data, subject, out / "store", getattr(model, "store_image_size", None))
    train_rows, val_rows = choose_rows(store, subject, n_images, seed, config.val_fraction)
    masks = store.space.fsaverage_masks(subject)
    readout = model.readout
    if subject in model.space.subjects:  # --overwrite-subject
        mine = model.space.fsaverage_masks(subject)
        if any(not np.array_equal(mine[h], masks[h]) for h in mine):
            raise ConfigError(
                f"{data}: {subject} has other vertices than the model's {subject}; adapt it "
                "under another name"
            )
        readout.remove_subject(subject)
        space, added = model.space, np.zeros(0, dtype=np.int64)
        space.subjects.remove(subject)
        space.subjects.append(subject)
        space.columns[subject] = space.columns.pop(subject)
    else:
        space, old_to_new, added = model.space.with_subject(subject, masks)
        if added.size:
            readout.extend_vertices(torch.from_numpy(old_to_new), torch.from_numpy(added))
    others = list(readout.subjects)
    readout.add_subject(subject, like=others if config.init == "average" and others else None)
    model.space = space
    model.subject_masks = torch.from_numpy(space.masks())
    model.config.readout = readout.config()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    params = readout.subject_parameters(subject)
    for p in params:
        p.requires_grad_(True)

    t_cache = time.perf_counter()
    image_rows = store.subject(subject).train_rows
    rows = np.concatenate([train_rows, val_rows])
    cache = build_feature_cache(
        model, store, image_rows[rows], 1, seed=seed, root=config.cache_dir, progress=False
    )
    with torch.no_grad():  # the frozen part up to the layer average, once per image
        hidden = {
            name: readout.hidden(cache.get(np.zeros(r.size, np.int64), cache.lookup(image_rows[r])))
            for name, r in (("train", train_rows), ("val", val_rows))
        }
    t_cache = time.perf_counter() - t_cache
    targets = {
        name: torch.from_numpy(store.read_fmri(subject, r))
        for name, r in (("train", train_rows), ("val", val_rows))
    }
    cols = space.subject_columns(subject)
    in_space = ~np.isin(cols, added)  # the subject's columns the embedding's PCA block covers
    index = space.subjects.index(subject)

    def predict(h: torch.Tensor) -> torch.Tensor:
        subj = torch.full((h.shape[0],), index, dtype=torch.long)
        return readout.from_latent(readout.latent(h, subj))[:, cols]

    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    run_dir = RunDir(out)
    best, best_state, best_epoch, since = -np.inf, None, -1, 0
    gen = torch.Generator().manual_seed(seed)
    n_train = len(train_rows)
    sel = torch.from_numpy(np.flatnonzero(in_space))
    for epoch in range(config.epochs):
        order = torch.randperm(n_train, generator=gen)
        total = 0.0
        for b in range(0, n_train, config.batch_size):
            batch = order[b : b + config.batch_size]
            pred = predict(hidden["train"][batch])[:, sel]
            loss = (pred - targets["train"][batch][:, sel]).pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * batch.numel()
        with torch.no_grad():
            stats = StreamingStats(int(sel.numel()))
            stats.update(predict(hidden["val"])[:, sel].numpy(), targets["val"][:, sel].numpy())
        metrics = summarize_stats({subject: stats}, "val")
        value = metrics["val/pearson_median"]
        run_dir.append_metrics(
            {"step": epoch + 1, "epoch": epoch, "train/loss": total / n_train, **metrics}
        )
        if value > best:
            best, best_epoch, since = value, epoch, 0
            best_state = copy.deepcopy(readout.per_subject[subject].state_dict())
        else:
            since += 1
            if since >= config.early_stop_patience:
                break
    readout.per_subject[subject].load_state_dict(best_state)
    n_added = _fit_added_vertices(
        readout, hidden["train"], targets["train"], space, subject, added, index, config
    )
    for p in params:
        p.requires_grad_(False)
    save_encoder(model, out / "best.safetensors", {"store_image_size": str(store.image_size)})
    header = {
        "brainencoder_version": __version__,
        "git_revision": git_revision(),
        "store": str(store.path.absolute()),
        "store_identity": store.identity(),
        "adapted_from": str(run.absolute()),
    }
    settings = {"subject": subject, "n_images": int(rows.size), "seed": seed, **asdict(config)}
    text = yaml.safe_dump({"run": header, "adapt": settings}, sort_keys=False)
    write_bytes_atomic(out / "config.yaml", text.encode())
    summary = {
        "finished": True,
        "subject": subject,
        "n_train_images": int(train_rows.size),
        "n_val_images": int(val_rows.size),
        "best_epoch": best_epoch,
        "val/pearson_median": best,
        "added_vertices": n_added,
        "feature_seconds": t_cache,
        "seconds": time.perf_counter() - start,
        "trainable_parameters": int(sum(p.numel() for p in params)),
    }
    write_json_atomic(out / "summary.json", summary)
    return summary


def _fit_added_vertices(readout, hidden, target, space, subject, added, index, config) -> int:
    """Ridge from the subject's latent to its responses at vertices outside the old space."""
    if added.size == 0:
        return 0
    from .baselines.solvers import ridge_cv

    cols = space.subject_columns(subject)
    mine = np.flatnonzero(np.isin(cols, added))
    if mine.size == 0:
        return 0
    with torch.no_grad():
        subj = torch.full((hidden.shape[0],), index, dtype=torch.long)
        z = readout.latent(hidden, subj).numpy()
    fit = ridge_cv(z, target[:, mine].numpy(), np.asarray(config.ridge_alphas), 5)
    readout.set_added_vertices(
        torch.from_numpy(cols[mine]),
        torch.from_numpy(np.asarray(fit.coef, dtype=np.float32)),
        torch.from_numpy(np.asarray(fit.intercept, dtype=np.float32)),
    )
    logger.info("%d vertices outside the group space: ridge from the latent", mine.size)
    return int(mine.size)
