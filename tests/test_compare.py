"""compare: runs side by side with bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd

from brainencoder.cli import main
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
    page = (tmp_path / "cmp" / "index.html").read_text()
    assert "Runs compared on the test split" in page and "difference_map.png" in page
    for name in ("roi_differences.png", "difference_map.png"):
        assert (tmp_path / "cmp" / name).stat().st_size > 5000
    assert main(["compare", str(tmp_path / "run0"), "--out", str(tmp_path / "c2")]) == 1
    assert "compare needs at least two runs" in capsys.readouterr().err
