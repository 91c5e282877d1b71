"""Losses: values, exactness under gradient accumulation, refusal where inexact."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from brainencoder.data.loader import ArrayBatches
from brainencoder.inference.cache import InMemoryFeatures
from brainencoder.models.readouts import create_readout
from brainencoder.training.config import load_config
from brainencoder.training.distributed import DistInfo
from brainencoder.training.losses import create_loss, masked_mse
from brainencoder.training.step import TrainStep, make_optimizer
from brainencoder.util.errors import ConfigError


def test_masked_losses_ignore_masked_entries():
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    target = torch.tensor([[0.0, 1e6], [3.0, 2.0]])
    mask = torch.tensor([[True, False], [True, True]])
    assert masked_mse(pred, target, mask).item() == pytest.approx((1 + 0 + 4) / 3)
    smooth = create_loss({"name": "smooth_l1", "beta": 1.0})
    assert smooth(pred, target, mask).item() == pytest.approx((0.5 + 0 + 1.5) / 3)


def test_pearson_loss_is_one_minus_mean_r_per_subject(rng):
    pred = torch.from_numpy(rng.standard_normal((6, 4))).float()
    target = torch.from_numpy(rng.standard_normal((6, 4))).float()
    subject = torch.tensor([0, 0, 0, 1, 1, 1])
    mask = torch.ones(6, 4, dtype=torch.bool)
    mask[3:, 3] = False  # subject 1 lacks vertex 3
    loss = create_loss({"name": "pearson"})(pred, target, mask, None, subject)
    rs = []
    for rows, cols in ((slice(0, 3), range(4)), (slice(3, 6), range(3))):
        for c in cols:
            rs.append(np.corrcoef(pred[rows, c], target[rows, c])[0, 1])
    assert loss.item() == pytest.approx(1 - np.mean(rs), abs=1e-5)


@pytest.mark.numerics
def test_pearson_loss_adds_mse_weight_times_the_masked_mse(rng):
    pred = torch.from_numpy(rng.standard_normal((6, 4))).float()
    target = torch.from_numpy(rng.standard_normal((6, 4))).float()
    subject = torch.tensor([0, 0, 0, 1, 1, 1])
    mask = torch.ones(6, 4, dtype=torch.bool)
    mask[3:, 3] = False
    alone = create_loss({"name": "pearson"})(pred, target, mask, None, subject)
    both = create_loss({"name": "pearson", "mse_weight": 0.5})(pred, target, mask, None, subject)
    mse = ((pred - target)[mask] ** 2).mean()
    # float32 sums of 22 terms: agreement to 1e-5
    assert both.item() == pytest.approx(alone.item() + 0.5 * mse.item(), abs=1e-5)
    with pytest.raises(ConfigError, match="'loss.mse_weight' must be >= 0"):
        create_loss({"name": "pearson", "mse_weight": -1})


def _step_weights(loss: dict, grad_accum: int, readout, batches, feats) -> dict:
    readout = copy.deepcopy(readout)
    config = load_config(
        None, [f"grad_accum={grad_accum}", "batch_size=12", "lr=0.01", "grad_clip=null"]
    )
    config.loss = loss
    step = TrainStep(
        readout,
        readout,
        batches,
        feats,
        create_loss(loss),
        make_optimizer(readout, config, torch.device("cpu")),
        torch.amp.GradScaler("cpu", enabled=False),
        config,
        torch.device("cpu"),
        DistInfo(),
    )
    step(np.arange(12), 0, 0)
    return {k: v.detach().clone() for k, v in readout.state_dict().items()}


@pytest.mark.numerics
@pytest.mark.parametrize("loss", [{"name": "mse"}, {"name": "smooth_l1", "beta": 0.05}])
def test_accumulation_gives_the_global_batch_step(rng, loss):
    """2 micro-batches = 1 batch: the same AdamW step (no BatchNorm, no dropout)."""
    shapes, n_vertices = [(5, 3, 3)], 7
    torch.manual_seed(0)
    readout = create_readout(
        "grouplin",
        shapes,
        ["subj01", "subj02"],
        n_vertices,
        hidden_dim=4,
        latent_dim=3,
        dropout=0.0,
        norm=False,
    )
    subject = np.array([0, 1] * 6)
    mask = np.ones((12, n_vertices), bool)
    mask[subject == 1, :2] = False  # subjects of different vertex counts
    batches = ArrayBatches(
        np.zeros((12, 4, 4, 3), np.uint8), subject, rng.standard_normal((12, n_vertices)), mask
    )
    feats = InMemoryFeatures([torch.from_numpy(rng.standard_normal((1, 12, *shapes[0]))).float()])
    one = _step_weights(loss, 1, readout, batches, feats)
    two = _step_weights(loss, 2, readout, batches, feats)
    start = readout.state_dict()
    for key in one:
        assert not torch.equal(one[key], start[key]) or key.startswith("embedding")
        torch.testing.assert_close(two[key], one[key], rtol=1e-6, atol=1e-7, msg=key)


def test_pearson_refused_where_it_would_change(store, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="does not decompose over samples, so gradient"):
        load_config(None, ["loss.name=pearson", "grad_accum=2", "batch_size=8"])
    import brainencoder.training.loop as loop
    import brainencoder.training.setup as setup

    monkeypatch.setattr(setup, "init_distributed", lambda kind: DistInfo(0, 2, 0))
    with pytest.raises(ConfigError, match="would differ across 2 processes"):
        loop.train(load_config(None, ["loss.name=pearson"]), store.path, tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_non_finite_loss_stops_before_any_update(rng):
    from brainencoder.training.step import NonFiniteLossError

    shapes = [(5, 3, 3)]
    readout = create_readout("grouplin", shapes, ["subj01"], 4, hidden_dim=4, latent_dim=3)
    target = rng.standard_normal((8, 4))
    target[3, 1] = np.inf
    batches = ArrayBatches(
        np.zeros((8, 4, 4, 3), np.uint8), np.zeros(8, int), target, np.ones((8, 4), bool)
    )
    feats = InMemoryFeatures([torch.from_numpy(rng.standard_normal((1, 8, *shapes[0]))).float()])
    before = copy.deepcopy(dict(readout.named_parameters()))
    with pytest.raises(NonFiniteLossError, match="the training loss became inf at step 1"):
        _step_weights_of(readout, batches, feats)
    for key, value in readout.named_parameters():
        assert torch.equal(value, before[key]), key


def _step_weights_of(readout, batches, feats):
    config = load_config(None, ["batch_size=8"])
    TrainStep(
        readout,
        readout,
        batches,
        feats,
        create_loss(config.loss),
        make_optimizer(readout, config, torch.device("cpu")),
        torch.amp.GradScaler("cpu", enabled=False),
        config,
        torch.device("cpu"),
        DistInfo(),
    )(np.arange(8), 0, 0)
