"""compare: runs side by side with bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainencoder.cli.main import main
from brainencoder.training.config import load_config
from brainencoder.training.loop import train
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


# ----------------------------------------------------------------------------- inputs and --out


@pytest.fixture(scope="module")
def tiny_runs(store, tmp_path_factory):
    """A tiny run and a copy of it (two runs to compare, trained once)."""
    import shutil

    from conftest import TINY_TRAIN

    root = tmp_path_factory.mktemp("tiny")
    train(load_config(None, [*TINY_TRAIN, f"cache_dir={root / 'cache'}"]), store.path, root / "a")
    shutil.copytree(root / "a", root / "b")
    return root / "a", root / "b"


def _compare(*argv):
    return main(["compare", *map(str, argv), "--n-boot", "5"])


def test_compare_refuses_runs_of_another_store_as_evaluate_does(store, tiny_runs, tmp_path, capsys):
    import shutil

    import yaml

    a, b = tiny_runs
    other = shutil.copytree(b, tmp_path / "other")  # as if trained on a store at 99 px
    config = yaml.safe_load((other / "config.yaml").read_text())
    config["run"]["store_identity"]["image_size"] = "99"
    (other / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["evaluate", str(other), "--store", str(store.path)]) == 1
    expected = capsys.readouterr().err
    assert f"is not the store {other} was trained on (other image size)" in expected
    for argv in ([a, other], [a, "--ensemble", f"{b},{other}"], [other, a]):
        assert _compare(*argv, "--store", store.path, "--out", tmp_path / "cmp") == 1
        assert capsys.readouterr().err == expected  # one line, evaluate's
    assert _compare(a, other, "--out", tmp_path / "cmp") == 1  # the first run's store
    assert capsys.readouterr().err == expected
    assert not (tmp_path / "cmp").exists()


def test_compare_out_follows_the_ownership_rules(
    store, synth_root, tiny_runs, tmp_path, monkeypatch, capsys
):
    import shutil

    import brainencoder.evaluation.compare as module
    from brainencoder.util.errors import DataError
    from brainencoder.util.ownership import MARKER, owned_kind

    a, b = tiny_runs
    truth = shutil.copytree(synth_root / "truth", tmp_path / "truth")
    user = tmp_path / "mine"
    user.mkdir()
    (user / "index.html").write_text("my page")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    refused = {
        store.path / "cmp": "lies inside the input",
        synth_root / "cmp": "lies inside the input",  # the store's data
        truth / "cmp": "lies inside the input",  # the noise ceilings
        a: "holds, contains or lies inside the input",  # it holds a run
        a.parent: "holds, contains or lies inside the input",
        work: "is or contains the current folder",
        user: "it holds files brainencoder did not write, not a brainencoder compare",
    }
    for out, message in refused.items():
        assert _compare(a, b, "--noise-ceiling", truth, "--out", out) == 1, out
        err = capsys.readouterr().err
        assert err.startswith("error: refusing to ") and message in err, (out, err)
        assert err.count("\n") == 1
    assert (user / "index.html").read_text() == "my page"
    assert not (store.path / "cmp").exists() and not (truth / "cmp").exists()

    out = tmp_path / "cmp"
    assert _compare(a, b, "--out", out) == 0
    assert owned_kind(out) == "compare" and (out / MARKER).is_file()
    table = pd.read_csv(out / "comparison.csv")
    assert _compare(a, b, "--out", out) == 0  # its own output is replaced
    pd.testing.assert_frame_equal(pd.read_csv(out / "comparison.csv"), table)
    inside = a / "compare"  # inside a run folder, where the run's report links it
    assert _compare(a, b, "--out", inside) == 0 and owned_kind(inside) == "compare"

    # a failure while writing leaves the previous output as it was, and nothing aside
    def broken(*args, **kwargs):
        raise DataError("the map failed")

    monkeypatch.setattr(module, "_difference_map", broken)
    page = (out / "index.html").read_bytes()
    assert _compare(a, b, "--split", "val", "--out", out) == 1
    assert "the map failed" in capsys.readouterr().err
    assert (out / "index.html").read_bytes() == page
    assert not list(tmp_path.glob(".*.tmp"))
    monkeypatch.undo()

    # held-back test responses that are a pickle: one line, nothing written
    monkeypatch.chdir(work)
    evil = np.empty((2, 2), dtype=object)
    np.save(truth / "subj01" / "lh_test_fmri.npy", evil, allow_pickle=True)
    fresh = tmp_path / "fresh"
    assert _compare(a, b, "--split", "test", "--noise-ceiling", truth, "--out", fresh) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {truth / 'subj01' / 'lh_test_fmri.npy'}: cannot read held-back")
    assert "pickled objects are never loaded" in err and err.count("\n") == 1
    assert not fresh.exists() and not list(tmp_path.glob(".*.tmp"))


def test_the_score_interval_holds_its_estimate_where_resampling_is_biased():
    # a good run and a weak one (as phase 1 against the pixel ridge): resampling images with
    # replacement inflates r ** 2 more for the weak run, so the resampled score differences
    # are not centred on the difference; the interval must still hold the estimate
    from brainencoder.evaluation.compare_stats import pearson_rows, shifted_percentiles, summary

    rng = np.random.default_rng(0)
    n, v = 50, 400
    signal = rng.normal(size=(n, v))
    target = signal + rng.normal(size=(n, v))
    good = signal + 0.5 * rng.normal(size=(n, v))
    weak = 0.15 * signal + rng.normal(size=(n, v))
    nc = np.full(v, 0.5)  # the planted signal's share of the variance
    samples = [rng.integers(0, n, n) for _ in range(200)]

    def score(pred, rows):
        return summary(pearson_rows(pred, target, rows), nc)["score"]

    estimate = score(weak, np.arange(n)) - score(good, np.arange(n))
    diffs = np.array([score(weak, s) - score(good, s) for s in samples])
    plain = np.percentile(diffs, [2.5, 97.5])
    assert not plain[0] <= estimate <= plain[1]  # the bias this guards against is real here
    low, high = shifted_percentiles(diffs, estimate)
    assert low < estimate < high
    # the width is the bootstrap's own (a shift, not a widening); float64 sums: 1e-9
    assert high - low == pytest.approx(plain[1] - plain[0], abs=1e-9)
    assert shifted_percentiles(np.zeros(10), 0.0).tolist() == [0.0, 0.0]
