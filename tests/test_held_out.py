"""One held-out rule for every model source: run folders, model files, init_from, adapt, soups."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from brainencoder.baselines.ridge import RidgeOptions, fit_ridge_baseline
from brainencoder.cli.main import main
from brainencoder.data.prepare import PrepareOptions, prepare_store
from brainencoder.evaluation.compare import compare_runs
from brainencoder.evaluation.evaluate import evaluate_run
from brainencoder.experiments.adapt import AdaptConfig, Overwrite, adapt, choose_rows
from brainencoder.models.extractor import FeatureSpec
from brainencoder.runs.ensemble import val_weights
from brainencoder.runs.load import load_model
from brainencoder.runs.provenance import RECORD_KEY, read_record
from brainencoder.runs.soup import soup_runs
from brainencoder.training.config import load_config
from brainencoder.training.loop import train
from brainencoder.util.errors import CheckpointError, ConfigError, DataError
from brainencoder.util.ownership import UnsafeOverwriteError
from conftest import TINY_TRAIN

FINAL = "train_on=[train, val, testval]"
PHASE2 = [o for o in TINY_TRAIN if not o.startswith("model.")]  # the model comes from init_from


@pytest.fixture(scope="module")
def runs(store, tmp_path_factory):
    """A run trained on train only and a final fit on every training image."""
    root = tmp_path_factory.mktemp("held_out")
    train(load_config(None, TINY_TRAIN), store.path, root / "plain")
    train(load_config(None, [*TINY_TRAIN, FINAL]), store.path, root / "final")
    return root / "plain", root / "final"


def _rewrite(src, dst, drop=(), **meta):
    """A copy of a model file with header entries dropped or replaced (tensors kept)."""
    with safe_open(str(src), framework="pt") as fh:
        header = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    for key in drop:
        header.pop(key, None)
    save_file(tensors, str(dst), metadata={**header, **meta})
    return dst


def test_a_model_file_carries_what_it_trained_on(runs, store):
    plain, final = runs
    record = read_record(final / "best.safetensors")
    assert set(record["subjects"]) == set(store.names)
    entry = record["subjects"][store.names[0]]
    assert entry["splits"] == ["train", "val", "testval"]
    assert entry["store_identity"] == store.identity()
    assert "store" not in json.dumps(record).replace("store_identity", "")  # no path
    # the checkpoint a run falls back to carries it too
    ckpt = next((plain / "checkpoints").glob("step-*")) / "model.safetensors"
    assert read_record(ckpt)["subjects"][store.names[0]]["splits"] == ["train"]


def test_a_final_fits_model_file_is_refused_on_the_splits_it_trained_on(runs, store, tmp_path):
    plain, final = runs
    model = final / "best.safetensors"
    for split in ("val", "testval"):
        with pytest.raises(DataError, match=f"trained on the {split} images"):
            evaluate_run(model, split, store=store, out_dir=tmp_path / "e")
    with pytest.raises(DataError, match="trained on the val images"):
        compare_runs([plain, model], tmp_path / "c", split="val", store=store.path)
    with pytest.raises(DataError, match="trained on the val images"):
        soup_runs([plain / "best.safetensors", model], tmp_path / "s", store=store.path)
    with pytest.raises(DataError, match="trained on the val images"):
        val_weights([load_model(model)] * 2, [model, model], store)
    assert not any((tmp_path / n).exists() for n in ("e", "c", "s"))
    # the test split is never trained on; a plain run's file is held out on val
    table = evaluate_run(plain / "best.safetensors", "val", store=store, out_dir=tmp_path / "v")
    assert np.isfinite(table["value"]).all()


def test_a_file_that_records_nothing_needs_trust_splits(runs, store, tmp_path):
    plain, _ = runs
    bare = _rewrite(plain / "best.safetensors", tmp_path / "bare.safetensors", drop=[RECORD_KEY])
    assert read_record(bare) is None
    with pytest.raises(DataError, match="records no training splits.*--trust-splits"):
        evaluate_run(bare, "val", store=store, out_dir=tmp_path / "e")
    assert not (tmp_path / "e").exists()
    table = evaluate_run(bare, "val", store=store, out_dir=tmp_path / "e", trust_splits=True)
    assert np.isfinite(table["value"]).all()
    code = main(["evaluate", str(bare), "--split", "val", "--store", str(store.path)])
    assert code != 0
    args = ["--store", str(store.path), "--out", str(tmp_path / "cli"), "--trust-splits"]
    assert main(["evaluate", str(bare), "--split", "val", *args]) == 0
    assert (tmp_path / "cli" / "metrics.csv").exists()


def test_trust_splits_never_overrides_a_record_of_training_on_the_split(runs, store, tmp_path):
    _, final = runs
    with pytest.raises(DataError, match="trained on the val images"):
        evaluate_run(final, "val", trust_splits=True)


def test_a_damaged_record_is_one_line(runs, tmp_path):
    plain, _ = runs
    bad = {"subjects": {"subj01": {"store_identity": {"fingerprint": 1}, "splits": ["x"]}}}
    path = _rewrite(plain / "best.safetensors", tmp_path / "m.safetensors", **{RECORD_KEY: "["})
    with pytest.raises(CheckpointError, match="damaged 'trained_on' record .*not JSON"):
        read_record(path)
    _rewrite(plain / "best.safetensors", path, **{RECORD_KEY: json.dumps(bad)})
    with pytest.raises(CheckpointError, match="subject 'subj01': store identity needs"):
        read_record(path)


def test_a_store_with_other_splits_of_the_same_data_is_refused(runs, synth_root, tmp_path):
    plain, _ = runs
    other = prepare_store(
        synth_root, tmp_path / "s1", PrepareOptions(image_size=32, split_seed=1), progress=False
    )
    model = plain / "best.safetensors"
    with pytest.raises(DataError, match="trained on other splits of the same data"):
        evaluate_run(model, "val", store=other, out_dir=tmp_path / "e")
    # the test split does not depend on the split seed
    evaluate_run(model, "train", store=other, out_dir=tmp_path / "e")


def test_init_from_a_final_fit_follows_the_chain(runs, store, tmp_path):
    _, final = runs
    init = f"init_from={final}"
    with pytest.raises(ConfigError, match="init_from .*trained on the val images.*epoch selection"):
        train(load_config(None, [*PHASE2, init]), store.path, tmp_path / "p2")
    assert not (tmp_path / "p2").exists()  # refused before the run folder is made
    # a phase 2 that trains on train only from it inherits its record
    config = load_config(None, [*PHASE2, init, "train_on=[train, val]"])
    train(config, store.path, tmp_path / "p2")
    record = read_record(tmp_path / "p2")
    assert record["subjects"][store.names[0]]["splits"] == ["train", "val", "testval"]
    with pytest.raises(DataError, match="trained on the testval images"):
        evaluate_run(tmp_path / "p2", "testval")


def test_init_from_a_file_that_records_nothing_is_unknown(runs, store, tmp_path):
    plain, _ = runs
    bare = _rewrite(plain / "best.safetensors", tmp_path / "bare.safetensors", drop=[RECORD_KEY])
    train(load_config(None, [*PHASE2, f"init_from={bare}"]), store.path, tmp_path / "p2")
    assert read_record(tmp_path / "p2")["subjects"][store.names[0]]["splits"] is None
    with pytest.raises(DataError, match="started from a model that records no training splits"):
        evaluate_run(tmp_path / "p2", "testval")
    evaluate_run(tmp_path / "p2", "testval", trust_splits=True)


def test_adapt_keeps_the_base_record_and_trains_on_train_rows_only(runs, store, tmp_path):
    plain, final = runs
    new = store.names[-1]
    train_rows, val_rows = choose_rows(store, new, None, 0, 0.15)
    assert set(train_rows) | set(val_rows) == set(store.split_rows(new, "train"))
    config = AdaptConfig(epochs=2)
    args = {"n_images": 30, "config": config, "overwrite": Overwrite(subject=True)}
    adapt(final, store.path, new, tmp_path / "af", **args)
    record = read_record(tmp_path / "af")
    assert record["subjects"][new]["splits"] == ["train"]
    assert record["subjects"][store.names[0]]["splits"] == ["train", "val", "testval"]
    with pytest.raises(DataError, match=f"{store.names[0]} trained on the testval images"):
        evaluate_run(tmp_path / "af", "testval")
    adapt(plain, store.path, new, tmp_path / "ap", **args)
    evaluate_run(tmp_path / "ap", "val")  # the new subject never saw a val row


def test_a_greedy_soup_selected_on_val_is_not_held_out_on_val(runs, store, tmp_path):
    plain, _ = runs
    soup_runs([plain, plain], tmp_path / "soup")
    assert read_record(tmp_path / "soup")["subjects"][store.names[0]]["splits"] == ["train", "val"]
    with pytest.raises(DataError, match="trained on the val images"):
        evaluate_run(tmp_path / "soup", "val")
    soup_runs([plain, plain], tmp_path / "uniform", greedy=False)
    evaluate_run(tmp_path / "uniform", "val")


def test_a_ridge_fitted_on_every_row_is_refused_on_val(store, tmp_path):
    spec = FeatureSpec(kind="pixels", pixel_size=8)
    ridge = RidgeOptions(alphas=[1.0], n_folds=2)
    fit_ridge_baseline(store, tmp_path / "r", spec=spec, ridge=ridge, split="all")
    with pytest.raises(DataError, match="trained on the val images"):
        evaluate_run(tmp_path / "r", "val")
    path = tmp_path / "r" / "ridge.safetensors"
    with pytest.raises(DataError, match="trained on the val images"):
        evaluate_run(path, "val", store=store, out_dir=tmp_path / "e")


def test_evaluate_writes_only_into_its_own_folder(runs, store, tmp_path):
    plain, _ = runs
    model = plain / "best.safetensors"
    with pytest.raises(DataError, match="a model file has no run folder .*pass --out DIR"):
        evaluate_run(model, "testval", store=store)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = tmp_path / "run"
    run.mkdir()
    for f in plain.iterdir():
        if f.is_file():
            (run / f.name).symlink_to(f)
    (run / "eval").symlink_to(elsewhere)
    with pytest.raises(UnsafeOverwriteError, match="eval is a symbolic link or not a folder"):
        evaluate_run(run, "testval")
    assert not any(elsewhere.iterdir())
