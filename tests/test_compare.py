"""compare: runs side by side with bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd

from brainencoder.cli.main import main
from brainencoder.train.config import load_config
from brainencoder.train.loop import train
from conftest import FAST_TRAIN

FAST = FAST_TRAIN


def test_compare_two_runs_with_intervals(store, synth_root, tmp_path, capsys):
    for seed in (0, 1):
        cfg = load_config(None, [*FAST, f"seed={seed}", f"cache_dir={tmp_path / 'cache'}"])
        train(cfg, store.path, tmp_path / f"run{seed}")
    argv = [
        "compare",
        str(tmp_path / "run0"),
        str(tmp_path / "run1"),
        "--split",
        "test",
        "--noise-ceiling",
        str(synth_root / "truth"),
        "--out",
        str(tmp_path / "cmp"),
        "--n-boot",
        "50",
    ]
    assert main(argv) == 0
    table = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    ref = table[table.run == "run0"]
    assert (ref["diff"] == 0).all()  # the reference against itself
    other = table[(table.run == "run1") & (table.roi == "all")]
    assert set(other.subject) == {*store.names, "all"} and set(other.metric) >= {"pearson", "score"}
    assert (other.ci_low <= other.ci_high).all() and np.isfinite(other.ci_low).all()
    assert (table.roi != "all").any()  # per-ROI rows from the label files
    pooled = other[other.subject == "all"].set_index("metric")
    assert set(pooled.index) == {"pearson", "score"}  # the challenge score over all subjects too
    each = other[other.subject != "all"]
    n_vertices = {s: sum(store.subject(s).n_vertices.values()) for s in store.names}
    assert len(set(n_vertices.values())) > 1  # so the weighting matters
    for metric in ("pearson", "score"):
        rows = each[each.metric == metric]
        mean = np.average(rows.value, weights=[n_vertices[s] for s in rows.subject])
        np.testing.assert_allclose(pooled.loc[metric, "value"], mean, rtol=1e-9)
    page = (tmp_path / "cmp" / "index.html").read_text()
    assert "Runs compared on the test split" in page and "difference_map.png" in page
    for name in ("roi_differences.png", "difference_map.png"):
        assert (tmp_path / "cmp" / name).stat().st_size > 5000
    assert main(["compare", str(tmp_path / "run0"), "--out", str(tmp_path / "c2")]) == 1
    assert "compare needs at least two runs" in capsys.readouterr().err


def test_compare_an_ensemble_of_runs(store, synth_root, tmp_path, capsys):
    from brainencoder.runs.ensemble import EnsembleModel
    from brainencoder.runs.load import load_model

    for seed in (0, 1):
        cfg = load_config(None, [*FAST, f"seed={seed}", f"cache_dir={tmp_path / 'cache'}"])
        train(cfg, store.path, tmp_path / f"run{seed}")
    runs = [tmp_path / "run0", tmp_path / "run1"]
    argv = ["compare", str(runs[0]), "--ensemble", ",".join(map(str, runs)), "--n-boot", "20"]
    assert main([*argv, "--out", str(tmp_path / "cmp")]) == 0
    table = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    name = "ensemble(run0+run1)"
    assert set(table.run) == {"run0", name}
    # the ensemble's prediction is the mean of its runs'
    models = [load_model(r) for r in runs]
    images = store.read_images(store.subject("subj01").train_rows[:4])
    mean = EnsembleModel(models).predict(images, "subj01")
    each = [m.predict(images, "subj01") for m in models]
    np.testing.assert_allclose(mean["lh"], (each[0]["lh"] + each[1]["lh"]) / 2, rtol=1e-6)
    assert main([*argv[:2], "--ensemble", str(runs[0]), "--out", str(tmp_path / "c3")]) == 1
    assert "an ensemble needs at least two runs" in capsys.readouterr().err
