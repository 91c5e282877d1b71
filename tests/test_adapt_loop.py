"""adapt trains through train's loop: the shared epoch runner, best-epoch tracker and config."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math

import numpy as np
import pytest
import torch

from brainencoder.experiments import adapt as adapt_module
from brainencoder.experiments import adapt_images, adapt_select, adapt_train
from brainencoder.experiments.adapt import (
    TRAIN_KEYS,
    AdaptConfig,
    Overwrite,
    adapt,
    load_adapt_config,
)
from brainencoder.runs.load import load_model
from brainencoder.training.config import TrainConfig, load_config
from brainencoder.training.loop import run_epochs, train
from brainencoder.training.partial import count_trained, partial_optimizer, rows_only
from brainencoder.training.selection import BestEpoch, BestParameters
from brainencoder.training.state import TrainState
from brainencoder.training.step import lr_at
from brainencoder.util.errors import ConfigError
from conftest import TINY_TRAIN

# --------------------------------------------------------------------------- the tracker


def _selection(scores, patience=None, metric="val/x"):
    """A BestEpoch over a list of per-epoch scores; records what it kept."""
    kept = []
    selection = BestEpoch(
        metric=metric,
        validate=lambda epoch: {"val/x": scores[epoch], "val/y": 0.0},
        keep=lambda metrics: kept.append(metrics),
        patience=patience,
    )
    return selection, kept


def test_best_epoch_keeps_each_better_epoch_and_stops_after_patience():
    selection, kept = _selection([0.1, 0.3, 0.2, 0.3, 0.25, 0.9], patience=3)
    state, stopped_at = TrainState(), None
    for epoch in range(6):
        metrics = selection.end_epoch(state, epoch)
        assert metrics["val/x"] == [0.1, 0.3, 0.2, 0.3, 0.25, 0.9][epoch]
        if selection.should_stop(state):
            stopped_at = epoch
            break
    # a tie is no improvement; three epochs without a better score stop the run
    assert stopped_at == 4 and state.best == 0.3 and state.best_epoch == 1
    assert state.epochs_since_best == 3 and [m["val/x"] for m in kept] == [0.1, 0.3]


def test_best_epoch_without_a_metric_keeps_every_epoch_and_never_stops():
    selection, kept = _selection([], patience=None, metric=None)
    state = TrainState()
    for epoch in range(3):
        assert selection.end_epoch(state, epoch) == {}
        assert not selection.should_stop(state)
    assert state.best is None and state.best_epoch == 2 and kept == [{}, {}, {}]


def test_best_epoch_refuses_a_missing_or_non_finite_score_and_keeps_nothing():
    selection, kept = _selection([math.nan])
    with pytest.raises(ConfigError, match="validation val/x is nan after epoch 1: .*not finite"):
        selection.end_epoch(TrainState(), 0)
    selection, kept = _selection([0.5], metric="val/z")
    with pytest.raises(ConfigError, match=r"'val_metric' 'val/z' is not computed.*'val/x'"):
        selection.end_epoch(TrainState(), 0)
    assert kept == []


def test_best_parameters_put_the_kept_copy_back():
    p = torch.nn.Parameter(torch.arange(6.0))
    best = BestParameters([p])
    best.restore()  # nothing kept yet: nothing changes
    assert torch.equal(p, torch.arange(6.0))
    best.keep({"val/x": 1.0})
    with torch.no_grad():
        p.add_(1.0)
    best.restore()
    assert torch.equal(p, torch.arange(6.0))


# --------------------------------------------------------------------------- chosen rows


def test_rows_only_trains_the_chosen_rows_and_never_decays_a_shared_tensor():
    torch.manual_seed(0)
    shared = torch.nn.Parameter(torch.randn(5, 3))  # rows 1 and 3 are the new subject's
    own = torch.nn.Parameter(torch.randn(4))
    trained = [(own, None), (shared, 0)]
    rows = torch.tensor([1, 3])
    before = shared.detach().clone()
    config = TrainConfig(lr=0.1, weight_decay=0.5)
    with rows_only(trained, rows):
        assert own.requires_grad and shared.requires_grad
        optimizer = partial_optimizer(trained, config)
        ((shared * torch.randn(5, 3)).sum() + (own * 2).sum()).backward()
        assert shared.grad[[0, 2, 4]].abs().sum() == 0 and shared.grad[rows].abs().sum() > 0
        optimizer.step()
    decays = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decays == {id(own): 0.5, id(shared): 0.0}
    assert torch.equal(shared[[0, 2, 4]], before[[0, 2, 4]])  # the other rows: bit-identical
    assert not torch.equal(shared[rows], before[rows])
    # on exit: frozen again, and the hook is gone
    assert not own.requires_grad and not shared.requires_grad
    shared.requires_grad_(True)
    shared.grad = None
    (shared * torch.ones(5, 3)).sum().backward()
    assert torch.equal(shared.grad, torch.ones(5, 3))
    assert count_trained(trained, n_rows=2) == 4 + 2 * 3


# --------------------------------------------------------------------------- AdaptConfig


def test_adapt_config_is_built_on_train_config():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(TRAIN_KEYS) <= fields  # the shared keys are TrainConfig's, under its names
    config = AdaptConfig(epochs=7, batch_size=64, lr=3e-3, early_stop_patience=2, cache_dir="c")
    loop = config.train_config(seed=5, n_train=40)
    assert isinstance(loop, TrainConfig)
    assert (loop.epochs, loop.lr, loop.weight_decay, loop.cache_dir) == (7, 3e-3, 0.01, "c")
    assert loop.batch_size == 40 and loop.seed == 5 and loop.early_stop_patience == 2
    assert loop.val_metric == "val/pearson_median" and loop.grad_clip is None
    assert loop.loss == {"name": "mse"} and loop.betas == [0.9, 0.999]  # torch's AdamW defaults
    loop.validate()
    # adapt's learning rate is constant: exactly lr at every step
    total = 3 * config.epochs
    assert all(
        lr_at(step, total, loop.lr, loop.warmup_frac, loop.min_lr_frac) == loop.lr
        for step in range(total)
    )


@pytest.mark.parametrize(
    "override, message",
    [
        ("epochs=0", r"^'epochs' must be >= 1; got 0$"),
        ("lr=2", r"^'lr' must be in \(0, 1\]; got 2"),
        ("weight_decay=-1", r"^'weight_decay' must be >= 0"),
        ("early_stop_patience=0", r"^'early_stop_patience' must be >= 1; got 0$"),
        ("val_fraction=0.6", r"^'val_fraction' must be in \(0, 0.5\); got 0.6$"),
        ("ridge_alphas=[0, 1]", r"^'ridge_alphas' must be positive numbers$"),
        ("init=mean", r"^'init' must be 'average' or 'default'; got 'mean'$"),
        ("folds=1", r"^'folds' must be 0 \(one validation split\) or >= 2; got 1$"),
        ("train_trunk=true", r"^unknown key\(s\) \['train_trunk'\]"),  # train's, not adapt's
    ],
)
def test_adapt_overrides_are_checked_as_train_checks_them(override, message):
    with pytest.raises(ConfigError, match=message):
        load_adapt_config([override])


def test_adapt_overrides_keep_their_keys():
    keys = "epochs=3 batch_size=8 lr=0.02 weight_decay=0 val_fraction=0.2 early_stop_patience=4"
    config = load_adapt_config([*keys.split(), "ridge_alphas=[1, 10]", "init=default"])
    assert (config.epochs, config.batch_size, config.lr, config.weight_decay) == (3, 8, 0.02, 0)
    assert (config.val_fraction, config.early_stop_patience) == (0.2, 4)
    assert config.ridge_alphas == [1.0, 10.0] and config.init == "default"


# --------------------------------------------------------------------------- the whole command


def test_adapt_has_no_epoch_loop_of_its_own():
    modules = (adapt_module, adapt_images, adapt_train, adapt_select)
    source = "".join(inspect.getsource(m) for m in modules)
    for piece in ("EpochBatchSampler", "TrainStep", "set_epoch", "torch.optim", "epochs_since"):
        assert piece not in source, piece


@pytest.fixture(scope="module")
def group_run(store, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapt_loop")
    train(load_config(None, [*TINY_TRAIN, f"cache_dir={root / 'cache'}"]), store.path, root / "run")
    return root / "run"


def test_adapt_runs_the_shared_loop_and_keeps_its_best_epoch(
    store, group_run, tmp_path, monkeypatch
):
    calls = []

    def spy(s, config, selection, **options):
        calls.append((config, selection, options))
        return run_epochs(s, config, selection, **options)

    monkeypatch.setattr(adapt_train, "run_epochs", spy)
    config = AdaptConfig(
        epochs=30,
        lr=0.02,
        early_stop_patience=2,
        cache_dir=str(tmp_path / "c"),
        pulls=[0.1],
        folds=0,  # one fit, its best epoch on the held-out images
    )
    args = {"n_images": 30, "config": config, "overwrite": Overwrite(subject=True)}
    summary = adapt(group_run, store.path, "subj01", tmp_path / "ad", **args)
    ((loop, selection, options),) = calls
    assert options == {"progress": False, "checkpoints": False}
    assert loop.early_stop_patience == 2 and selection.metric == "val/pearson_median"
    assert loop.batch_size == summary["n_train_images"]  # at most the training images
    lines = (tmp_path / "ad" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    epochs = [r for r in records if "val/pearson_median" in r]
    steps = [r for r in records if "train/loss" in r]
    assert len(steps) == epochs[-1]["step"] and all(r["lr"] == 0.02 for r in steps)
    scores = [r["val/pearson_median"] for r in epochs]
    assert summary["best_epoch"] == int(np.argmax(scores))
    assert summary["val/pearson_median"] == max(scores) == epochs[-1]["best"]
    # every epoch ran, or early stopping two epochs after the best (here: 4 of 30, best 1)
    assert len(epochs) in (30, summary["best_epoch"] + 3)
    assert not (tmp_path / "ad" / "checkpoints").exists()


def test_adapt_chooses_the_pull_on_folds_and_keeps_the_mean_of_their_fits(
    store, group_run, tmp_path, monkeypatch
):
    calls, fits = [], []
    original = BestParameters.restore

    def spy(s, config, selection, **options):
        calls.append((config, selection))
        return run_epochs(s, config, selection, **options)

    def restore(self):  # every fit's kept parameters, as BestParameters restores them
        original(self)
        fits.append([p.detach().clone() for p in self.params])

    monkeypatch.setattr(adapt_train, "run_epochs", spy)
    monkeypatch.setattr(BestParameters, "restore", restore)
    pulls = [0.1, 1.0]
    config = AdaptConfig(epochs=4, cache_dir=str(tmp_path / "c"), pulls=pulls, folds=3)
    args = {"n_images": 30, "config": config, "overwrite": Overwrite(subject=True)}
    summary = adapt(group_run, store.path, "subj01", tmp_path / "ad", **args)
    # one fit per fold and pull, each validated on its fold (10 of the 30 images)
    assert len(calls) == len(fits) == 3 * len(pulls) and summary["folds"] == 3
    assert all(selection.metric == "val/pearson_median" for _, selection in calls)
    assert all(loop.batch_size == 20 for loop, _ in calls)
    assert summary["n_train_images"] + summary["n_val_images"] == 30
    scores = summary["pull_scores"]
    assert summary["pull"] == max(pulls, key=lambda p: scores[f"{p:g}"])
    # the subject's parameters: the mean of the chosen pull's three fits (the mean of the
    # changes from the start, summed in another order: float32 rounding, 1e-6)
    start = 3 * pulls.index(summary["pull"])
    chosen = fits[start : start + 3]
    module = load_model(tmp_path / "ad").readout.per_subject["subj01"]
    for i, (name, value) in enumerate(module.named_parameters()):
        expected = torch.stack([fit[i] for fit in chosen]).mean(0)
        torch.testing.assert_close(value.detach(), expected, rtol=1e-6, atol=1e-6, msg=name)
