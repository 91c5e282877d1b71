"""``train_on: [train, val]``: a final fit on every image but the testval ones."""

from __future__ import annotations

import json

import numpy as np
import pytest

from brainencoder.data.loader import build_index
from brainencoder.evaluation.compare import compare_runs
from brainencoder.evaluation.evaluate import evaluate_run
from brainencoder.runs.ensemble import val_weights
from brainencoder.runs.load import load_model
from brainencoder.runs.run import Run
from brainencoder.runs.soup import soup_runs
from brainencoder.training.config import load_config
from brainencoder.training.loop import train
from brainencoder.util.errors import ConfigError, DataError
from conftest import TINY_TRAIN


def test_train_on_is_checked_before_any_work():
    allowed = r"'train_on' must be \[train\], \[train, val\] or \[train, val, testval\]"
    with pytest.raises(ConfigError, match=allowed):
        load_config(None, [*TINY_TRAIN, "train_on=[val]"])
    with pytest.raises(ConfigError, match="'early_stop_patience' needs the val split"):
        load_config(None, [*TINY_TRAIN, "train_on=[train, val]", "early_stop_patience=2"])


def test_training_on_train_and_val_uses_both_and_keeps_the_last_epoch(store, tmp_path):
    both = build_index(store, ["train", "val"])
    train_only, val = build_index(store, "train"), build_index(store, "val")
    assert len(both) == len(train_only) + len(val)  # every row of both splits, once
    assert set(zip(both.subject, both.row)) == set(zip(train_only.subject, train_only.row)) | set(
        zip(val.subject, val.row)
    )
    run = tmp_path / "run"
    config = load_config(None, [*TINY_TRAIN, "epochs=2", "batch_size=16", "train_on=[train, val]"])
    summary = train(config, store.path, run)
    batches = len(both) // config.batch_size  # full batches (the last partial one is dropped)
    assert batches > len(train_only) // config.batch_size
    assert summary["steps"] == 2 * batches and summary["best_epoch"] == 1
    assert summary["trained_on"] == ["train", "val"] and summary["val/r2_median"] is None
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert not any(k.startswith("val/") for r in records for k in r)  # nothing to validate on
    assert Run(run).config["train_on"] == ["train", "val"]
    refused = "trained on the val images .* use a run trained on train only, or the testval"
    with pytest.raises(DataError, match=refused):
        evaluate_run(run, "val")
    table = evaluate_run(run, "testval")  # still held out
    assert np.isfinite(table["value"]).all()
    # every other command that scores, weights or selects on val refuses it too, before any work
    with pytest.raises(DataError, match=refused):
        compare_runs([run, run], tmp_path / "compare", split="val")
    with pytest.raises(DataError, match=refused):
        soup_runs([run, run], tmp_path / "soup")
    with pytest.raises(DataError, match=refused):
        val_weights([load_model(run)] * 2, [run, run])
    assert not (tmp_path / "compare").exists() and not (tmp_path / "soup").exists()


def test_training_on_every_image_leaves_only_the_test_set(store, tmp_path):
    run = tmp_path / "run"
    config = load_config(None, [*TINY_TRAIN, "train_on=[train, val, testval]"])
    train(config, store.path, run)
    with pytest.raises(DataError, match="trained on the testval images"):
        evaluate_run(run, "testval")
    with pytest.raises(DataError, match="trained on the val images"):
        evaluate_run(run, "val")
