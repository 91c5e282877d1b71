"""One prediction path: over store rows (cache or images), over images, one average, one resize."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import brainencoder
import brainencoder.runs.ensemble as ensemble_module
from brainencoder.core.space import HEMIS
from brainencoder.data.transforms import resize
from brainencoder.inference.cache import CacheSpec, InMemoryFeatures, build_feature_cache
from brainencoder.inference.images import (
    average_predictions,
    ensemble_predict,
    list_images,
    predict_images,
)
from brainencoder.inference.store import (
    predict_store_rows,
    split_stats,
    subject_stats,
    summarize_stats,
)
from brainencoder.models.encoder import create_encoder
from brainencoder.runs.ensemble import EnsembleModel, val_weights

TINY = {"img_size": 32, "readout": {"hidden_dim": 8, "latent_dim": 4}}

# Tolerances of metrics with the feature cache against metrics from the images.
# The cache stores features as float16 (the default: 11 significant bits, a
# relative rounding of at most 2**-11 = 4.9e-4 per value) or as int8 (1/254 of
# each channel's largest value in the image). The readout carries that error
# into the predictions, where it is about 1e-3 (float16) or 2e-2 (int8) of their
# spread over the images, and Pearson r over a subject's 6 validation images
# moves up to 7.5e-4 (float16) or 2.2e-2 (int8) per vertex, the per-subject and
# overall medians and means up to 1.5e-4 or 7.4e-3 (measured with seeds 0-2).
# The tolerances leave a margin of at least 4x; float32 features agree to float32
# rounding (test_the_cache_path_differs_only_by_how_features_are_stored).
METRIC_ATOL = {"float16": 2e-3, "int8": 3e-2}
VERTEX_ATOL = {"float16": 5e-3, "int8": 1e-1}


def _encoder(store, seed: int = 0):
    """A tiny random encoder whose predictions vary with the image.

    A fresh ``grouplin_seq`` readout predicts the training mean (its shared
    layer starts at zero), so the shared and per-subject maps are drawn at random.
    """
    torch.manual_seed(seed)
    model = create_encoder("tiny", store.space, **TINY)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.readout.named_parameters():
            if name == "shared.weight" or ("per_subject" in name and name.endswith("weight")):
                p.add_(torch.randn(p.shape, generator=gen))
    model.store_image_size = store.image_size
    return model


def _val_image_rows(store) -> np.ndarray:
    return np.unique(
        np.concatenate(
            [store.subject(n).train_rows[store.split_rows(n, "val")] for n in store.names]
        )
    )


def _rows(store, model, subject, rows, **kwargs) -> np.ndarray:
    parts = [p for _, p in predict_store_rows(model, store, subject, rows, **kwargs)]
    return np.concatenate(parts)


def test_one_function_predicts_over_images_and_none_is_written_twice():
    src = Path(brainencoder.__file__).parent
    defs = [
        p
        for p in src.rglob("*.py")
        for line in p.read_text().splitlines()
        if re.match(r"\s*def iter_predictions\b", line)
    ]
    assert len(defs) <= 1, defs
    # ensembles score through split_stats and average through average_predictions
    source = inspect.getsource(ensemble_module)
    assert "StreamingStats" not in source and "predict_store_rows" not in source
    assert "np.mean" not in source


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_validation_metrics_agree_with_and_without_the_feature_cache(store, tmp_path, dtype):
    model = _encoder(store)
    cache = build_feature_cache(
        model, store, _val_image_rows(store), CacheSpec(dtype=dtype), root=tmp_path
    )
    plain = split_stats(model, store, "val")
    cached = split_stats(model, store, "val", cache)
    assert plain.keys() == cached.keys() == set(store.names)
    for name in store.names:
        r = plain[name].pearson()
        assert np.ptp(r) > 0.5  # the predictions follow the images: a real comparison
        np.testing.assert_allclose(cached[name].pearson(), r, rtol=0, atol=VERTEX_ATOL[dtype])
    metrics, with_cache = summarize_stats(plain, "val"), summarize_stats(cached, "val")
    assert metrics.keys() == with_cache.keys()
    for key, value in metrics.items():
        assert abs(with_cache[key] - value) <= METRIC_ATOL[dtype], (key, value, with_cache[key])


def test_the_cache_path_differs_only_by_how_features_are_stored(store):
    """With float32 features in memory, the readout path gives the image path's predictions."""
    model = _encoder(store)
    images = store.read_images(np.arange(store.images.shape[0]))
    with torch.no_grad():
        features = model.eval().forward_features(model.prepare_images(images))
    exact = InMemoryFeatures([f[None] for f in features])  # one view, cache row = store row
    for name in store.names:
        rows = store.split_rows(name, "val")
        from_images = _rows(store, model, name, rows)
        from_cache = _rows(store, model, name, rows, cache=exact, batch_size=4)
        assert from_cache.dtype == np.float32 and from_cache.shape == from_images.shape
        np.testing.assert_allclose(from_cache, from_images, rtol=1e-5, atol=1e-7)


def test_store_predictions_of_an_encoder_are_its_forward_on_resized_images(store):
    model = _encoder(store)
    name = store.names[1]
    rows = store.split_rows(name, "val")
    got = _rows(store, model, name, rows)  # one batch, as below (batching moves the rounding)
    x = resize(torch.from_numpy(store.read_images(store.subject(name).train_rows[rows])), 32)
    subject = torch.full((rows.size,), store.space.subject_index(name))
    with torch.no_grad():
        want = model.eval()(x, subject)[:, store.space.subject_columns(name)].numpy()
    np.testing.assert_array_equal(got, want)  # what validation computed before the merge
    test = _rows(store, model, name, np.arange(3), test=True)
    pred = model.predict(store.read_images(store.subject(name).test_rows[:3]), name)
    np.testing.assert_array_equal(test, np.concatenate([pred[h] for h in HEMIS], 1))
    with pytest.raises(TypeError, match="a feature cache holds an encoder's trunk features"):
        next(predict_store_rows(EnsembleModel([model, model]), store, name, rows, cache=object()))


def test_subject_stats_takes_other_targets(store):
    model = _encoder(store)
    name = store.names[0]
    rows = store.split_rows(name, "val")
    default = subject_stats(model, store, name, rows)
    negated = subject_stats(model, store, name, rows, lambda r: -store.read_fmri(name, r))
    np.testing.assert_allclose(negated.pearson(), -default.pearson(), atol=1e-12)


def test_the_ensemble_mean_is_the_equal_weights_average(store, synth_root):
    models = [_encoder(store, seed) for seed in range(3)]
    images = store.read_images(np.arange(6))
    name = store.names[0]
    preds = [m.predict(images, name) for m in models]
    mean = EnsembleModel(models).predict(images, name)
    n = preds[0]["lh"].shape[1] + preds[0]["rh"].shape[1]
    for h in HEMIS:
        np.testing.assert_array_equal(mean[h], average_predictions(preds)[h])
        equal = average_predictions(preds, [np.full(n, 1 / 3)] * 3)[h]
        np.testing.assert_allclose(mean[h], equal, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(mean[h], sum(p[h] for p in preds) / 3, rtol=1e-5, atol=1e-7)
    # one model weighted 1 everywhere is that model
    only = average_predictions(preds, [np.zeros(n), np.ones(n), np.zeros(n)])
    assert all(np.array_equal(only[h], preds[1][h]) for h in HEMIS)
    # the same average over image files, as many models or as one EnsembleModel
    paths = list_images(synth_root / name / "test_split" / "test_images")[:5]
    together = ensemble_predict(models, paths, name, workers=0)
    as_one = predict_images(EnsembleModel(models), paths, name, workers=0)
    assert all(np.array_equal(together[h], as_one[h]) for h in HEMIS)


def test_val_weights_score_every_member_with_split_stats(store, tmp_path, monkeypatch):
    models = [_encoder(store, seed) for seed in range(2)]
    calls = []

    def recording(model, store_, split, *args, **kwargs):
        stats = split_stats(model, store_, split, *args, **kwargs)
        calls.append((model, split, stats))
        return stats

    monkeypatch.setattr(ensemble_module, "split_stats", recording)
    monkeypatch.setattr(ensemble_module, "check_held_out", lambda *a, **k: None)
    weights = val_weights(models, [tmp_path / "a", tmp_path / "b"], store)
    assert [(m, split) for m, split, _ in calls] == [(models[0], "val"), (models[1], "val")]
    for name in store.names:
        r = [np.clip(stats[name].pearson(), 0, None) ** 2 for _, _, stats in calls]
        total = r[0] + r[1]
        want = np.where(total > 0, r[0] / np.where(total > 0, total, 1), 0.5)
        np.testing.assert_allclose(weights[0][name], want)
        np.testing.assert_allclose(weights[0][name] + weights[1][name], 1.0)


def test_prepare_images_is_the_one_resize(store):
    model = _encoder(store)
    images = store.read_images(np.arange(4))
    u8 = model.prepare_images(images)
    assert u8.shape == (4, 3, 32, 32) and u8.dtype == torch.float32
    assert torch.equal(u8, resize(torch.from_numpy(images), 32))
    floats = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.prepare_images(floats), resize(floats, 32))
    assert torch.equal(resize(floats[:, :, :32, :32], 32), floats[:, :, :32, :32])
    with pytest.raises(ValueError, match=r"uint8 images must have shape \(B, H, W, 3\)"):
        model.prepare_images(images.transpose(0, 3, 1, 2).copy())
    with pytest.raises(ValueError, match=r"^images must have shape \(B, 3, H, W\)"):
        model.prepare_images(floats.permute(0, 2, 3, 1))
