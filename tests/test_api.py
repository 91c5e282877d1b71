"""The Python API: load -> predict -> map -> ROI in a few lines, with the commands' checks."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import brainencoder as be
from brainencoder.util.errors import ConfigError, DataError
from conftest import TINY_TRAIN


@pytest.fixture(scope="module")
def run(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "run"
    return be.train(None, store=store.path, out=out, overrides=TINY_TRAIN)


def test_train_returns_the_run_and_load_predicts_from_any_image_form(run, store, synth_root):
    assert run.finished and run.model_kind == "encoder"
    model = be.load(run.path)
    assert model.subjects == store.names
    folder = synth_root / "subj01" / "test_split" / "test_images"
    files = sorted(folder.iterdir())[:4]
    from_folder = model.predict(folder, subject="subj01")
    assert len(from_folder) == 12 and from_folder.lh.shape[0] == 12
    from_files = model.predict([str(f) for f in files], subject="subj01")
    pil = [Image.open(f) for f in files]
    from_pil = model.predict(pil, subject="subj01")
    array = np.stack([np.asarray(p.convert("RGB")) for p in pil])
    from_array = model.predict(array, subject="subj01")
    for h in ("lh", "rh"):  # the same pixels give the same predictions, however they come
        np.testing.assert_array_equal(from_files[h], from_folder[h][:4])
        np.testing.assert_array_equal(from_pil[h], from_files[h])
        np.testing.assert_array_equal(from_array[h], from_files[h])
    assert from_array.both().shape == (4, store.space.subject_columns("subj01").size)


def test_load_of_several_runs_predicts_their_mean(run, store, synth_root, tmp_path):
    tiny = {"model": {"img_size": 32, "readout": {"hidden_dim": 8}}, "model.readout.latent_dim": 4}
    tiny |= {"epochs": 1, "batch_size": 32, "cache_features": True, "seed": 1}  # a mapping
    other = be.train(None, store=store.path, out=tmp_path / "b", overrides=tiny)
    folder = synth_root / "subj01" / "test_split" / "test_images"
    single = [be.load(r).predict(folder, "subj01") for r in (run.path, other.path)]
    both = be.load(run.path, other.path)
    assert both.subjects == store.names and repr(both).startswith(f"Model({str(run.path)!r}")
    pred = both.predict(folder, "subj01")
    for h in ("lh", "rh"):  # float32 mean of two: rounding of the last bit at most
        np.testing.assert_allclose(pred[h], (single[0][h] + single[1][h]) / 2, rtol=1e-6)
    with pytest.raises(DataError, match="nowhere: no such run folder or model file"):
        be.load(run.path, tmp_path / "nowhere")


def test_maps_on_fsaverage_and_roi_selection(run, store, synth_root):
    model = be.load(run.path)
    pred = model.predict(synth_root / "subj02" / "test_split" / "test_images", "subj02")
    maps = pred.to_fsaverage()
    masks = store.space.fsaverage_masks("subj02")
    for h in ("lh", "rh"):
        assert maps[h].shape == (len(pred), masks[h].size)
        assert np.isnan(maps[h][:, ~masks[h]]).all()  # NaN off the subject's vertices
        np.testing.assert_array_equal(maps[h][:, masks[h]], pred[h])
    names = _roi_names(synth_root, "subj02")
    values = pred.roi(names[0])
    mask = pred.roi_mask(names[0])
    assert values.shape == (len(pred), int(mask.sum())) and mask.sum() > 0
    np.testing.assert_array_equal(values, pred.both()[:, mask])
    with pytest.raises(DataError, match="unknown ROI 'nowhere'; valid names: "):
        pred.roi("nowhere")


def test_errors_are_the_commands(run, tmp_path):
    model = be.load(run.path)
    with pytest.raises(DataError, match="unknown subject 'subj09'; the model has subj01"):
        model.predict(np.zeros((1, 8, 8, 3), np.uint8), "subj09")
    with pytest.raises(DataError, match=r"image 0: float image with values in \[255, 255\]"):
        model.predict([np.full((8, 8, 3), 255.0)], "subj01")  # floats mean [0, 1]
    with pytest.raises(DataError, match=r"must be uint8 RGB .* got int64"):
        model.predict([np.zeros((8, 8, 3), np.int64)], "subj01")
    with pytest.raises(DataError, match=r"channels first\? use array.transpose"):
        model.predict(np.zeros((1, 3, 8, 8), np.uint8), "subj01")
    with pytest.raises(DataError, match="no such run folder or model file"):
        be.load(tmp_path / "missing")
    with pytest.raises(ConfigError, match="needs store= .* and out="):
        be.train("demo")
    with pytest.raises(ConfigError, match="neither a file nor a packaged config"):
        be.train("no-such-config", store=tmp_path, out=tmp_path / "r")


def test_evaluate_and_listings(run):
    table = be.evaluate(run.path, "val")
    assert {"subject", "metric", "value"} <= set(table.columns)
    assert "point" in be.list_readouts() and "resnet18" in be.list_trunks("resnet1*")


def _roi_names(root, subject) -> list[str]:
    from brainencoder.data.layout import read_layout

    subj = read_layout(root, [subject])[subject]
    return [v for g in subj.roi_groups for k, v in subj.load_mapping(g).items() if k != 0]
