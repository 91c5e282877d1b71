import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import r2_score as sk_r2

from brainencoder.core.metrics import (
    StreamingStats,
    aggregate,
    noise_normalized_score,
    pearson_r,
    r2_score,
)
from brainencoder.util.errors import DataError


@pytest.mark.numerics
def test_pearson_and_r2_match_scipy_sklearn(rng):
    target = rng.normal(size=(50, 7))
    pred = 0.5 * target + rng.normal(size=(50, 7))
    r = pearson_r(pred, target)
    np.testing.assert_allclose(r, [pearsonr(pred[:, j], target[:, j])[0] for j in range(7)])
    np.testing.assert_allclose(
        r2_score(pred, target), sk_r2(target, pred, multioutput="raw_values")
    )


@pytest.mark.numerics
def test_streaming_equals_batch(rng):
    target = rng.normal(size=(101, 5)) * 3 + 10
    pred = target + rng.normal(size=(101, 5))
    stats = StreamingStats(5)
    for start in range(0, 101, 17):
        stats.update(pred[start : start + 17], target[start : start + 17])
    np.testing.assert_allclose(stats.pearson(), pearson_r(pred, target), rtol=1e-10)
    np.testing.assert_allclose(stats.r2(), r2_score(pred, target), rtol=1e-10)


def test_hand_computed_cases():
    t = np.array([[1.0], [2.0], [3.0]])
    assert pearson_r(2 * t + 1, t)[0] == pytest.approx(1.0)
    assert pearson_r(-t, t)[0] == pytest.approx(-1.0)
    assert r2_score(t, t)[0] == 1.0
    assert r2_score(np.full_like(t, 2.0), t)[0] == pytest.approx(0.0)  # predicting the mean
    assert r2_score(t + 1, t)[0] == pytest.approx(1 - 3 / 2)
    assert pearson_r(np.ones_like(t), t)[0] == 0.0  # constant prediction
    with pytest.raises(DataError, match="need at least 2 images"):
        pearson_r(t[:1], t[:1])
    with pytest.raises(ValueError, match="must both be"):
        pearson_r(t, np.ones((3, 2)))


def test_noise_normalized_score_follows_the_devkit():
    r = np.array([0.5, -0.3, 0.9, 0.4, -0.2, 0.2, np.nan])
    nc = np.array([0.5, 0.5, 0.5, 0.0, 0.0, 1.0, 0.5])
    score = noise_normalized_score(r, nc)
    # hand-computed: 100 r^2 / NC, r < 0 -> 0, NC 0 -> 1e-14, capped at 100, NaN r -> 0
    np.testing.assert_allclose(score, [50.0, 0.0, 100.0, 100.0, 0.0, 4.0, 0.0])
    positive = noise_normalized_score(r, nc, "nc_positive")
    assert np.isnan(positive[3]) and np.isnan(positive[4])  # NC == 0: left out of that mean
    np.testing.assert_allclose(np.nanmean(positive), (50 + 0 + 100 + 4 + 0) / 5)
    with pytest.raises(ValueError, match="fractions"):
        noise_normalized_score(r, nc * 100 + 1)


def test_aggregate_rois():
    values = {"lh": np.array([1.0, 2.0, 3.0, np.nan]), "rh": np.array([4.0, 5.0])}
    rois = {"g": {"lh": np.array([0, 1, 1, 2]), "rh": np.array([1, 0])}}
    rows = aggregate(values, rois, {"g": {0: "Unknown", 1: "A", 2: "B"}})
    by = {(r["hemisphere"], r["roi"]): r for r in rows}
    assert by[("both", "all")]["mean"] == pytest.approx(3.0)
    assert by[("both", "all")]["n_vertices"] == 5
    assert by[("both", "A")]["median"] == pytest.approx(3.0)  # 2, 3, 4
    assert by[("lh", "B")]["n_vertices"] == 0 and np.isnan(by[("lh", "B")]["mean"])
    assert ("rh", "B") in by and ("lh", "Unknown") not in by
