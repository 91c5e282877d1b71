"""Ensemble weights chosen on validation: per vertex, per ROI, stacked, best member; be.load."""

from __future__ import annotations

import numpy as np
import pytest

import brainencoder as be
from brainencoder.core.regions import subject_roi_masks
from brainencoder.data.layout import read_layout
from brainencoder.inference.images import average_predictions
from brainencoder.runs.ensemble import val_weights
from brainencoder.runs.ensemble_weights import (
    best_member,
    normalize,
    per_region,
    region_labels,
    stacked,
)
from brainencoder.runs.load import load_model
from brainencoder.training.config import load_config
from brainencoder.training.loop import train
from brainencoder.util.errors import ConfigError, DataError
from conftest import TINY_TRAIN


def test_region_labels_give_each_vertex_the_first_mask_holding_it():
    a = np.array([1, 1, 0, 0, 0], bool)
    b = np.array([0, 1, 1, 0, 0], bool)
    np.testing.assert_array_equal(region_labels([a, b], 5), [1, 1, 2, 0, 0])


def test_per_region_weights_are_the_regions_mean_score_normalized():
    scores = np.array([[0.4, 0.2, 0.0, 0.0], [0.1, 0.1, 0.0, 0.3]])
    labels = np.array([1, 1, 2, 2])
    w = per_region(scores, labels)
    # region 1: means 0.3 vs 0.1 -> 0.75 / 0.25; region 2: 0.0 vs 0.15 -> 0 / 1
    np.testing.assert_allclose(w, [[0.75, 0.75, 0.0, 0.0], [0.25, 0.25, 1.0, 1.0]], atol=1e-12)
    np.testing.assert_allclose(normalize(np.zeros((2, 3))), 0.5)  # nothing positive: uniform


def test_best_member_is_one_hot_and_uniform_where_no_member_correlates():
    r = np.array([[0.2, -0.1, np.nan], [0.5, -0.3, np.nan]])
    np.testing.assert_array_equal(best_member(r), [[0.0, 0.5, 0.5], [1.0, 0.5, 0.5]])


def test_stacking_recovers_planted_mixing_weights(rng):
    # the responses are exactly 0.7 * member 0 + 0.3 * member 1 (+ offsets); member 2 is noise
    preds = rng.standard_normal((3, 40, 6))
    target = 0.7 * preds[0] + 0.3 * preds[1] + 5.0
    w = stacked(preds, target, np.zeros(6, np.int64))
    # exact data: NNLS solves it to rounding (1e-8 is far above float64 error, far below 0.1)
    np.testing.assert_allclose(w[:, 0], [0.7, 0.3, 0.0], atol=1e-8)
    np.testing.assert_allclose(w.sum(0), 1.0, atol=1e-12)


@pytest.fixture(scope="module")
def members(store, tmp_path_factory):
    """Two runs trained on the train split only (seeds 0 and 1), and one that saw val."""
    root = tmp_path_factory.mktemp("ens")
    for seed in (0, 1):
        train(load_config(None, [*TINY_TRAIN, f"seed={seed}"]), store.path, root / f"s{seed}")
    train(load_config(None, [*TINY_TRAIN, "train_on=[train, val]"]), store.path, root / "val")
    return root / "s0", root / "s1", root / "val"


def _roi_labels(synth_root, name):
    layout = read_layout(synth_root, [name])
    masks = [m.both() for m in subject_roi_masks(layout[name])]
    return region_labels(masks, masks[0].size)


@pytest.mark.parametrize("by", ["vertex", "roi", "stack", "best"])
def test_val_weights_sum_to_one_and_roi_weights_are_constant_per_roi(
    by, members, store, synth_root
):
    models = [load_model(m) for m in members[:2]]
    weights = val_weights(models, members[:2], store, by=by)
    for name in store.names:
        w = np.stack([weights[0][name], weights[1][name]])
        np.testing.assert_allclose(w.sum(0), 1.0, atol=1e-9)  # float64 normalisation
        assert (w >= 0).all()
        if by in ("roi", "stack"):
            labels = _roi_labels(synth_root, name)
            for k in np.unique(labels):
                assert np.ptp(w[:, labels == k], axis=1).max() == 0
        if by == "best":
            assert set(np.unique(w)) <= {0.0, 0.5, 1.0}


def test_load_with_weights_predicts_the_weighted_mean(members, store):
    a, b, _ = members
    weighted = be.load(a, b, weights="roi", store=store.path)
    weights = val_weights([load_model(a), load_model(b)], [a, b], store, by="roi")
    images = store.read_images(store.subject(store.names[0]).test_rows[:4])
    name = store.names[0]
    got = weighted.predict(images, subject=name)
    parts = [load_model(p).predict(images, name) for p in (a, b)]
    want = average_predictions(parts, [weights[0][name], weights[1][name]])
    # the same arithmetic on the same float32 predictions (only the image decoding path differs)
    np.testing.assert_allclose(got.lh, want["lh"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.rh, want["rh"], rtol=1e-5, atol=1e-6)


def test_weights_refuse_one_run_an_unknown_scheme_and_a_run_that_saw_val(members, store):
    a, b, saw_val = members
    with pytest.raises(ConfigError, match="weights an ensemble: pass two or more runs"):
        be.load(a, weights="roi")
    with pytest.raises(ConfigError, match="'by' must be one of"):
        val_weights([load_model(a), load_model(b)], [a, b], store, by="region")
    with pytest.raises(DataError, match="val"):
        be.load(a, saw_val, weights="vertex", store=store.path)


def test_roi_weights_need_the_roi_files(members, store, tmp_path):
    a, b, _ = members
    with pytest.raises(DataError, match="not known or gone"):
        be.load(a, b, weights="roi", store=store.path, data=tmp_path / "gone")
