import json
import shutil
import zipfile
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

from brainencoder.baselines.ridge import FeatureSpec, RidgeModel, fit_ridge_baseline
from brainencoder.cli.main import main
from brainencoder.core.metrics import noise_normalized_score
from brainencoder.data.layout import read_layout
from brainencoder.evaluation.evaluate import evaluate_run
from brainencoder.evaluation.report import write_report
from brainencoder.evaluation.submission import read_submission, score_submission, write_submission
from brainencoder.inference.images import ensemble_predict, list_images, predict_images
from brainencoder.models.solvers import ols, ridge_cv
from brainencoder.runs.load import load_model
from brainencoder.training.config import load_config
from brainencoder.training.loop import train
from brainencoder.util.errors import CheckpointError, DataError, UnsafeFileError

matplotlib.use("Agg")
FAST = [
    "model.img_size=32",
    "model.readout.hidden_dim=16",
    "model.readout.latent_dim=8",
    "epochs=3",
    "batch_size=32",
    "lr=3e-3",
    "weight_decay=0.01",
    "cache_features=true",
]


@pytest.fixture(scope="module")
def run(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "enc"
    cache = tmp_path_factory.getbasetemp() / "cache"
    train(load_config(None, [*FAST, f"cache_dir={cache}"]), store.path, out)
    return out


@pytest.fixture(scope="module")
def ridge_run(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ridge"
    spec = FeatureSpec(kind="trunk", layers=["layer1", "layer2"], img_size=32)
    fit_ridge_baseline(store, out, spec)
    return out


def test_challenge_score_matches_independent_formula(run, store, synth_root):
    truth = synth_root / "truth"
    table = evaluate_run(run, "test", store, noise_ceiling=truth)
    model = load_model(run)
    layout = read_layout(synth_root)
    every = []
    for name, subj in layout.subjects.items():
        from brainencoder.data.images import load_image

        images = np.stack([load_image(p, store.image_size) for p in subj.test_images])
        pred = model.predict(images, name)
        for h in ("lh", "rh"):
            y = np.load(truth / name / f"{h}_test_fmri.npy").astype(np.float64)
            nc = np.load(truth / name / f"{h}_noise_ceiling.npy").astype(np.float64)
            p = pred[h].astype(np.float64)
            r = ((p - p.mean(0)) * (y - y.mean(0))).sum(0) / np.sqrt(
                ((p - p.mean(0)) ** 2).sum(0) * ((y - y.mean(0)) ** 2).sum(0)
            )
            every.append(np.minimum(100 * np.maximum(r, 0) ** 2 / nc, 100))
    expected = np.concatenate(every).mean()
    got = table[
        (table.subject == "all") & (table.metric == "score") & (table.statistic == "mean")
    ].value.iloc[0]
    assert got == pytest.approx(expected, rel=1e-4)
    assert set(table.columns) == {
        "subject",
        "hemisphere",
        "roi_group",
        "roi",
        "metric",
        "statistic",
        "n_vertices",
        "value",
    }
    assert {"V1v", "FFA-1", "early"} <= set(table.roi)
    assert (run / "eval" / "test" / "metrics.csv").exists()
    assert noise_normalized_score(np.array([0.5]), np.array([0.25]))[0] == 100.0


def test_submission_round_trip_and_validation(run, synth_root, tmp_path):
    layout = read_layout(synth_root)
    model = load_model(run)
    preds = {n: predict_images(model, s.test_images, n) for n, s in layout.subjects.items()}
    out = write_submission(preds, layout, tmp_path / "sub.zip")
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == sorted(
            f"{n}/{h}_pred_test.npy" for n in layout.names for h in ("lh", "rh")
        )
    back = read_submission(out, layout)
    np.testing.assert_array_equal(back["subj03"]["rh"], preds["subj03"]["rh"])
    scores = score_submission(out, synth_root / "truth", layout)
    every = []  # independently: r per vertex, r < 0 -> 0, 100 r^2 / NC capped at 100
    for name in layout.names:
        for h in ("lh", "rh"):
            truth = np.load(synth_root / "truth" / name / f"{h}_test_fmri.npy")
            nc = np.load(synth_root / "truth" / name / f"{h}_noise_ceiling.npy")
            p, t = preds[name][h] - preds[name][h].mean(0), truth - truth.mean(0)
            r = (p * t).sum(0) / np.sqrt((p * p).sum(0) * (t * t).sum(0))
            safe = np.where(nc == 0, 1e-14, nc)  # the devkit's rule
            every.append(np.minimum(100 * np.nan_to_num(r).clip(0) ** 2 / safe, 100))
    assert scores["all"] == pytest.approx(np.mean(np.concatenate(every)), rel=1e-5)
    assert 20 < scores["all"] < 100  # a trained model, not noise
    bad = {n: dict(p) for n, p in preds.items()}
    bad["subj02"]["lh"] = bad["subj02"]["lh"][:-1]
    with pytest.raises(DataError, match=r"subj02/lh_pred_test.npy: shape \(.*\), expected"):
        write_submission(bad, layout, tmp_path / "bad.zip")
    assert not (tmp_path / "bad.zip").exists()
    bad["subj02"]["lh"] = preds["subj02"]["lh"].astype(np.float64)
    with pytest.raises(DataError, match="dtype float64, expected float32"):
        write_submission(bad, layout, tmp_path / "bad.zip")
    bad["subj02"]["lh"] = preds["subj02"]["lh"].copy()
    bad["subj02"]["lh"][0, 0] = np.nan
    with pytest.raises(DataError, match="holds NaN or inf"):
        write_submission(bad, layout, tmp_path / "bad.zip")
    del bad["subj02"]
    with pytest.raises(DataError, match=r"missing \['subj02'\]"):
        write_submission(bad, layout, tmp_path / "bad.zip")
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        zf.writestr("../../etc/passwd", b"x")
    with pytest.raises(UnsafeFileError, match="unexpected member '../../etc/passwd'"):
        read_submission(tmp_path / "evil.zip")


def test_predict_any_images_and_cli(run, tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 255, (30, 30), dtype=np.uint8)).save(folder / "b.jpg")
    Image.fromarray(rng.integers(0, 255, (40, 40, 4), dtype=np.uint8)).save(folder / "c.png")
    (folder / "notes.txt").write_text("x")
    assert [p.name for p in list_images(folder)] == ["a.png", "b.jpg", "c.png"]

    def predict(out, *extra):
        argv = ["predict", str(run), str(folder), "--subject", "subj03", *extra]
        return main([*argv, "--out", str(out)])

    assert predict(tmp_path / "p.npz") == 0
    with np.load(tmp_path / "p.npz") as f:
        assert f["lh"].shape[0] == 3 and f["names"].tolist() == ["a.png", "b.jpg", "c.png"]
        assert predict(tmp_path / "s.npy") == 0  # streamed batch by batch into the files
        for hemi in ("lh", "rh"):
            np.testing.assert_array_equal(np.load(tmp_path / f"s_{hemi}.npy"), f[hemi])
    (folder / "d.png").write_bytes(b"garbage")
    assert predict(tmp_path / "q.npy", "--batch-size", "1") == 1  # fails after 3 batches
    assert "d.png: cannot decode image" in capsys.readouterr().err
    assert not list(tmp_path.glob("*q_*"))  # nothing half-written, no temporary file left
    with pytest.raises(CheckpointError, match="no model found"):
        load_model(tmp_path)


def test_predict_is_the_same_with_any_number_of_decoding_threads(run, synth_root):
    paths = read_layout(synth_root)["subj01"].test_images[:7]
    model = load_model(run)
    serial = predict_images(model, paths, "subj01", batch_size=3, workers=0)
    assert serial["lh"].shape[0] == 7
    for workers in (1, 4):
        threaded = predict_images(model, paths, "subj01", batch_size=3, workers=workers)
        for hemi in ("lh", "rh"):
            np.testing.assert_array_equal(threaded[hemi], serial[hemi])


def test_predict_from_an_image_array_equals_the_same_pixels_as_files(
    run, tmp_path, capsys, monkeypatch
):
    import h5py
    from PIL import Image

    from brainencoder.data.sources import ImageArray

    pixels = np.random.default_rng(1).integers(0, 256, (5, 40, 40, 3), dtype=np.uint8)
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"{i}.png")
    np.save(tmp_path / "images.npy", pixels)
    with h5py.File(tmp_path / "stimuli.hdf5", "w") as f:
        f["imgBrick"] = pixels
        f["labels"] = np.arange(5)
    model = load_model(run)
    from_files = predict_images(model, list_images(folder), "subj02", batch_size=2)
    for path in ("images.npy", "stimuli.hdf5"):
        with ImageArray(tmp_path / path) as images:
            got = predict_images(model, images, "subj02", batch_size=2)
        for hemi in ("lh", "rh"):
            np.testing.assert_array_equal(got[hemi], from_files[hemi])

    def predict(source, *extra):
        argv = ["predict", str(run), str(source), "--subject", "subj02", *extra]
        return main([*argv, "--out", str(tmp_path / "p.npz")])

    assert predict(tmp_path / "stimuli.hdf5", "--rows", "1:3") == 0
    with np.load(tmp_path / "p.npz") as f:
        assert f["rows"].tolist() == [1, 2]
        np.testing.assert_array_equal(f["lh"], from_files["lh"][1:3])
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["a"], f["b"] = pixels, pixels
    assert predict(tmp_path / "two.h5") == 1
    assert "2 datasets look like images (a, b; all datasets: a, b); name one with --dataset" in (
        capsys.readouterr().err
    )
    assert predict(tmp_path / "two.h5", "--dataset", "b", "--rows", "4:") == 0
    with np.load(tmp_path / "p.npz") as f:
        assert f["rows"].tolist() == [4] and f["lh"].shape[0] == 1
    for source, extra, message in [
        ("images.npy", ["--rows", "3:9"], "rows 3:9 are not a range within its 5 images"),
        ("two.h5", ["--dataset", "c"], "no dataset 'c'; it has a, b"),
        ("images.npy", ["--dataset", "a"], "--dataset applies to HDF5 files, not .npy"),
    ]:
        assert predict(tmp_path / source, *extra) == 1
        assert message in capsys.readouterr().err
    np.save(tmp_path / "chw.npy", pixels.transpose(0, 3, 1, 2).astype(np.float32))
    assert predict(tmp_path / "chw.npy") == 1
    assert "expected uint8 RGB images of shape (n_images, height, width, 3); got float32 " in (
        capsys.readouterr().err
    )
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # as a 40 x 40 image were a bomb
    with pytest.raises(DataError, match="images of 40 x 40 pixels are too large to read safely"):
        ImageArray(tmp_path / "images.npy")
    monkeypatch.undo()
    assert predict(folder, "--rows", "0:2") == 1
    assert "--dataset and --rows apply to image array files" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        predict(tmp_path / "images.npy", "--rows", "5")
    assert "argument --rows: expected START:STOP" in capsys.readouterr().err


@pytest.mark.numerics
def test_ensemble_mean_and_weights(run, ridge_run, synth_root):
    layout = read_layout(synth_root)
    models = [load_model(run), load_model(ridge_run)]
    paths = layout["subj01"].test_images[:4]
    a, b = (predict_images(m, paths, "subj01") for m in models)
    mean = ensemble_predict(models, paths, "subj01")
    np.testing.assert_allclose(mean["lh"], (a["lh"] + b["lh"]) / 2, rtol=1e-5, atol=1e-6)
    n = a["lh"].shape[1] + a["rh"].shape[1]
    only_first = ensemble_predict(models, paths, "subj01", [np.ones(n), np.zeros(n)])
    np.testing.assert_allclose(only_first["rh"], a["rh"], rtol=1e-6)


@pytest.mark.numerics
def test_ridge_solver_matches_himalaya(rng):
    from himalaya.ridge import RidgeCV

    X = rng.normal(size=(200, 30))
    Y = X @ rng.normal(size=(30, 40)) * rng.uniform(0, 1, 40) + rng.normal(size=(200, 40)) * (
        rng.uniform(0.5, 20, 40)
    )
    alphas = np.logspace(-2, 5, 15)
    ours = ridge_cv(X, Y, alphas)
    ref = RidgeCV(alphas=alphas, cv=5, fit_intercept=True).fit(X, Y)
    np.testing.assert_allclose(ours.alphas, ref.best_alphas_, rtol=1e-5)
    np.testing.assert_allclose(ours.predict(X), ref.predict(X), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours.cv_scores, ref.cv_scores_, rtol=1e-5)
    fit = ols(X, Y)
    coef, *_ = np.linalg.lstsq(np.c_[X, np.ones(200)], Y, rcond=None)
    np.testing.assert_allclose(fit.coef, coef[:-1], rtol=1e-4, atol=1e-5)


def test_baselines_run_like_encoder_runs(ridge_run, store, synth_root, tmp_path):
    model = RidgeModel.load(ridge_run / "ridge.safetensors")
    assert model.predict(np.asarray(store.images[:3]), "subj02")["rh"].shape == (
        3,
        store.subject("subj02").n_vertices["rh"],
    )
    table = evaluate_run(ridge_run, "testval", store)
    assert (table.metric == "pearson").any()
    assert (
        main(
            [
                "baseline",
                "devkit",
                "--store",
                str(store.path),
                "--out",
                str(tmp_path / "dev"),
                "--layers",
                "layer2",
                "--img-size",
                "32",
                "--pca-components",
                "20",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "baseline",
                "ridge",
                "--features",
                "pixels",
                "--store",
                str(store.path),
                "--out",
                str(tmp_path / "pix"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "submit",
                str(ridge_run),
                str(tmp_path / "pix"),
                "--data",
                str(synth_root),
                "--out",
                str(tmp_path / "ens.zip"),
                "--val-weights",
                "--truth",
                str(synth_root / "truth"),
            ]
        )
        == 0
    )
    read_submission(tmp_path / "ens.zip", read_layout(synth_root))
    with pytest.raises(CheckpointError, match="already holds a run; pass --overwrite"):
        fit_ridge_baseline(store, tmp_path / "pix", FeatureSpec(kind="pixels"))


def test_plots_show_the_runs_metrics(run, store, synth_root, capsys, monkeypatch):
    from PIL import Image

    from brainencoder.evaluation import plotting
    from brainencoder.runs.run import Run

    drawn = {}  # file name -> (arguments, figure) of every figure plot draws

    def spy(plot):
        def recorded(*args, **kwargs):
            fig = plot(*args, **kwargs)
            drawn[Path(kwargs["output_file"]).name] = (args, fig)
            return fig

        return recorded

    for name in ("plot_surface_map", "plot_roi_bars", "plot_learning_curves"):
        monkeypatch.setattr(plotting, name, spy(getattr(plotting, name)))
    truth = str(synth_root / "truth")
    assert main(["evaluate", str(run), "--split", "testval", "--noise-ceiling", truth]) == 0
    assert "challenge score" in capsys.readouterr().out
    assert main(["plot", str(run), "--split", "testval"]) == 0
    written = {p.name for p in (run / "figures").iterdir()}
    assert written == set(drawn)  # every figure written is one checked below
    assert {"subj01_pearson_testval.png", "subj03_score_testval.png"} <= written
    assert {"roi_score_testval.png", "learning_curves.png"} <= written
    for name, (_, fig) in drawn.items():  # the PNG is the figure, and not blank
        with Image.open(run / "figures" / name) as image:
            expected = tuple(round(v) for v in fig.get_size_inches() * fig.dpi)
            assert image.size == expected, name
            pixels = np.asarray(image.convert("RGB"))
        assert pixels.std() > 10 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50, name

    # cortical maps: every vertex of the subject, at its fsaverage index, with its value
    space = load_model(run).space
    with np.load(run / "eval" / "testval" / "per_vertex.npz") as f:
        per_vertex = dict(f)
    for subject, metric in (("subj01", "pearson"), ("subj03", "score")):
        (maps, title, label), fig = drawn[f"{subject}_{metric}_testval.png"]
        for h in ("lh", "rh"):
            values = per_vertex[f"{subject}.{h}.{metric}"]
            local = space.columns[subject][h] - space.hemi_slice(h).start
            np.testing.assert_array_equal(maps[h][space.vertices[h][local]], values)
            assert np.isfinite(maps[h]).sum() == values.size  # nothing else is coloured
        assert label == {"pearson": "Pearson r", "score": "noise-normalized score (%)"}[metric]
        assert title == f"{subject}: {label} on testval images"
        assert fig._suptitle.get_text() == title

    # ROI bars: each subject's bar over each ROI is its median score in metrics.csv
    table = pd.read_csv(run / "eval" / "testval" / "metrics.csv")
    (_, fig) = drawn["roi_score_testval.png"]
    ax = fig.axes[0]
    rois = [t.get_text() for t in ax.get_xticklabels()]
    assert {"V1v", "FFA-1"} <= set(rois) and len(ax.containers) == len(store.names)
    for bars in ax.containers:
        subject = bars.get_label()
        rows = table[
            (table.subject == subject)
            & (table.metric == "score")
            & (table.statistic == "median")
            & (table.hemisphere == "both")
            & (table.roi_group != "all")
        ]
        expected = [rows[rows.roi == roi].value.mean() for roi in rois]
        np.testing.assert_allclose([b.get_height() for b in bars], expected, equal_nan=True)

    # learning curves: the training losses and validation scores of metrics.jsonl
    records = Run(run).read_metrics()
    (_, fig) = drawn["learning_curves.png"]
    loss_ax, val_ax = fig.axes[:2]
    losses = [r["train/loss"] for r in records if "train/loss" in r and "step" in r]
    np.testing.assert_array_equal(loss_ax.lines[0].get_ydata(), losses)
    epochs = [r for r in records if "val/r2_median" in r and "epoch" in r]
    assert len(epochs) == 3  # FAST trains 3 epochs
    np.testing.assert_array_equal(val_ax.lines[0].get_ydata(), [r["val/r2_median"] for r in epochs])
    np.testing.assert_array_equal(val_ax.lines[0].get_xdata(), [1, 2, 3])


def test_fsaverage5_resampling_keeps_every_value(rng):
    from brainencoder.evaluation.plotting import fsaverage5_meshes, fsaverage_to_fsaverage5

    n_fs = 10242 * 4
    meshes, _ = fsaverage5_meshes()
    fs5 = np.asarray(meshes["sphere"].parts["left"].coordinates)
    # a fake denser sphere: fsaverage5 vertices first, then midpoints of random pairs
    pairs = rng.integers(0, 10242, (n_fs - 10242, 2))
    mids = fs5[pairs[:, 0]] * 0.95 + fs5[pairs[:, 1]] * 0.05
    sphere = np.vstack([fs5, mids])
    values = np.full(n_fs, np.nan)
    values[10242:] = 1.0  # only vertices beyond fsaverage5 are measured
    out = fsaverage_to_fsaverage5(values, "lh", sphere)
    assert np.nanmax(out) == 1.0 and np.isfinite(out).sum() > 1000
    assert np.isnan(fsaverage_to_fsaverage5(values, "lh")).all()  # subset only: none shown


def test_cli_submit_refuses_missing_test_images(run, synth_root, tmp_path, capsys):
    root = shutil.copytree(synth_root, tmp_path / "data")
    for p in (root / "subj02/test_split/test_images").iterdir():
        p.unlink()
    assert main(["submit", str(run), "--data", str(root), "--out", str(tmp_path / "s.zip")]) == 1
    assert "have no test images" in capsys.readouterr().err
    assert not (tmp_path / "s.zip").exists()


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _render_dom(page, tmp_path) -> str:
    """The DOM of ``page`` after headless Chromium ran its scripts (offline flags)."""
    import subprocess

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    flags += [f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    cmd = [_chromium(), *flags, "--dump-dom", page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="needs Debian's chromium (make test installs it)")
def test_report_renders_in_headless_chromium(run, store, synth_root, tmp_path):
    import re

    evaluate_run(run, "testval", store, noise_ceiling=synth_root / "truth")
    assert main(["plot", str(run), "--split", "testval"]) == 0
    assert main(["report", str(run)]) == 0
    page = run / "report.html"
    n_figures = len(list((run / "figures").glob("*.png")))
    text = page.read_text()
    assert text.count("class='figure'") == n_figures and "plotly" in text.lower()
    dom = _render_dom(page, tmp_path)
    match = re.search(r'data-figures-loaded="(\d+)"', dom)
    assert match is not None, dom[:500]
    assert int(match.group(1)) == n_figures > 0


_PAYLOADS = (
    "<script>document.body.dataset.pwned='script'</script>",
    "<img src=x onerror=\"document.body.dataset.pwned='img'\">",
)


def _crafted_run(run, store, synth_root, tmp_path):
    """A copy of a real run whose names, CSV and config carry script payloads."""
    evaluate_run(run, "testval", store, noise_ceiling=synth_root / "truth")
    crafted = shutil.copytree(run, tmp_path / "crafted")
    csv = crafted / "eval" / "testval" / "metrics.csv"
    table = pd.read_csv(csv)
    evil = table[table.subject == "subj01"].copy()
    evil["subject"] = _PAYLOADS[1]
    pd.concat([table, evil]).to_csv(csv, index=False)
    shutil.copytree(crafted / "eval" / "testval", crafted / "eval" / _PAYLOADS[1].replace("/", ""))
    (crafted / "config.yaml").write_text(
        (crafted / "config.yaml").read_text() + f"# {_PAYLOADS[0]}\n"
    )
    (crafted / "summary.json").write_text(json.dumps({"note": _PAYLOADS[0]}))
    (crafted / "figures").mkdir(exist_ok=True)
    (crafted / "figures" / f"{_PAYLOADS[0].replace('/', '')}.png").write_bytes(b"not a png")
    return crafted


def test_report_escapes_everything_from_the_run(run, store, synth_root, tmp_path):
    crafted = _crafted_run(run, store, synth_root, tmp_path)
    text = write_report(crafted).read_text()
    for payload in (*_PAYLOADS, _PAYLOADS[0].replace("/", "")):
        assert payload not in text  # only escaped forms reach the page
    assert "pwned" in text  # the payloads are shown, escaped
    assert "sandbox='allow-scripts'" in text


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="needs Debian's chromium (make test installs it)")
def test_crafted_report_runs_no_script_in_headless_chromium(run, store, synth_root, tmp_path):
    page = write_report(_crafted_run(run, store, synth_root, tmp_path))
    dom = _render_dom(page, tmp_path)
    assert "data-figures-loaded" in dom, dom[:500]  # the page's own script ran
    assert "data-pwned" not in dom  # no script from the data did


def test_score_command_equals_the_devkit_on_hand_made_truth(tmp_path, capsys, caplog):
    """Negative r, NC = 0 vertices and a constant prediction, scored by hand."""
    target = np.array([[1.0, 0.0, 2.0], [2.0, 1.0, 2.5], [3.0, 0.0, 1.0], [4.0, 1.0, 0.5]])
    pred = {
        "lh": np.stack([target[:, 0], -target[:, 1], np.full(4, 3.0)], 1),  # r 1, -1, undefined
        "rh": target[:, :2] * 2,  # r 1, 1
    }
    nc = {"lh": np.array([0.5, 0.0, 0.25]), "rh": np.array([0.0, 0.8])}
    truth = tmp_path / "truth" / "subj01"
    truth.mkdir(parents=True)
    for h in ("lh", "rh"):
        np.save(truth / f"{h}_test_fmri.npy", target[:, : pred[h].shape[1]])
        np.save(truth / f"{h}_noise_ceiling.npy", nc[h] * (100 if h == "rh" else 1))  # rh in %
    with zipfile.ZipFile(tmp_path / "s.zip", "w") as zf:
        for h in ("lh", "rh"):
            buf = __import__("io").BytesIO()
            np.save(buf, pred[h].astype(np.float32))
            zf.writestr(f"subj01/{h}_pred_test.npy", buf.getvalue())
    # lh: r=1/NC .5 -> 100 (capped); r=-1/NC 0 -> 0; constant -> 0
    # rh: r=1/NC 0 -> 100 (1e-14); r=1/NC .8 -> 100 (capped)
    expected_all = (100 + 0 + 0 + 100 + 100) / 5
    expected_positive = (100 + 0 + 100) / 3
    scores = score_submission(tmp_path / "s.zip", tmp_path / "truth")
    assert scores["all"] == pytest.approx(expected_all)
    assert scores["all_nc_positive"] == pytest.approx(expected_positive)
    assert "look like percentages; dividing by 100" in caplog.text
    assert main(["score", str(tmp_path / "s.zip"), "--truth", str(tmp_path / "truth")]) == 0
    out = capsys.readouterr().out
    assert f"mean over every vertex): {expected_all:.2f}%" in out
    assert f"noise ceiling > 0 only: {expected_positive:.2f}%" in out


# ----------------------------------------------------------------------------- untrusted zips


def _npy(arr, allow_pickle=False) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def _header(shape) -> bytes:
    """The .npy header of a float32 array of ``shape``, without its data."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f4", "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


def _zip(path, members, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _patch_central(path, member, offset, fmt, value):
    """Rewrite one field of ``member``'s central-directory entry (as a damaged zip would hold)."""
    import struct

    data = bytearray(path.read_bytes())
    name = member.encode()
    pos = data.find(b"PK\x01\x02")
    while data[pos + 46 : pos + 46 + len(name)] != name:
        pos = data.find(b"PK\x01\x02", pos + 4)
    struct.pack_into(fmt, data, pos + offset, value)
    path.write_bytes(bytes(data))


@pytest.fixture
def two_subject_truth(tmp_path):
    """Truth of subj01 (4 images x 3 + 2 vertices) and subj02 (4 x 2 + 2), and good predictions."""
    rng = np.random.default_rng(0)
    sizes = {"subj01": {"lh": 3, "rh": 2}, "subj02": {"lh": 2, "rh": 2}}
    preds = {}
    for name, hemis in sizes.items():
        (tmp_path / "truth" / name).mkdir(parents=True)
        preds[name] = {}
        for h, n in hemis.items():
            target = rng.normal(size=(4, n))
            np.save(tmp_path / "truth" / name / f"{h}_test_fmri.npy", target)
            np.save(tmp_path / "truth" / name / f"{h}_noise_ceiling.npy", np.full(n, 0.5))
            preds[name][h] = (target + rng.normal(size=(4, n))).astype(np.float32)
    return tmp_path / "truth", preds


def _members(preds):
    return {f"{n}/{h}_pred_test.npy": _npy(a) for n, p in preds.items() for h, a in p.items()}


def test_score_refuses_incomplete_and_non_float_zips(two_subject_truth, tmp_path, capsys):
    truth, preds = two_subject_truth
    good = _members(preds)
    assert 0 < score_submission(_zip(tmp_path / "good.zip", good), truth)["all"] <= 100
    lh = "subj01/lh_pred_test.npy"
    complex_lh = preds["subj01"]["lh"].astype(np.complex64)
    nan_lh = preds["subj01"]["lh"].copy()
    nan_lh[1, 2] = np.nan
    objects = np.empty((4, 3), dtype=object)
    cases = {
        "no_subj02": (
            {k: v for k, v in good.items() if "subj02" not in k},
            r"missing \['subj02'\]",
        ),
        "no_rh": (
            {k: v for k, v in good.items() if k != "subj01/rh_pred_test.npy"},
            "subj01/rh_pred_test.npy: missing",
        ),
        "complex": ({**good, lh: _npy(complex_lh)}, f"{lh}: dtype complex64, expected float32"),
        "nan": ({**good, lh: _npy(nan_lh)}, f"{lh}: holds NaN or inf values"),
        "text": ({**good, lh: _npy(np.full((4, 3), "a"))}, f"{lh}: dtype <U1, expected float32"),
        "pickle": (
            {**good, lh: _npy(objects, allow_pickle=True)},
            f"{lh}: holds pickled Python objects",
        ),
        "shape": (
            {**good, lh: _npy(preds["subj01"]["lh"][:3])},
            r"shape \(3, 3\), expected \(4, 3\)",
        ),
        "stranger": ({**good, "subj09/lh_pred_test.npy": good[lh]}, "subject 'subj09' is not in"),
    }
    for name, (members, message) in cases.items():
        path = _zip(tmp_path / f"{name}.zip", members)
        with pytest.raises(DataError, match=message) as info:
            score_submission(path, truth)
        assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
    # the CLI: one line on stderr and status 1, never a score of a zip that lacks subjects
    assert main(["score", str(tmp_path / "no_subj02.zip"), "--truth", str(truth)]) == 1
    captured = capsys.readouterr()
    assert "%" not in captured.out and "Traceback" not in captured.err
    assert captured.err.startswith(f"error: {tmp_path / 'no_subj02.zip'}: submission subjects")
    assert captured.err.count("\n") == 1
    # without truth or dataset (read_submission alone): both hemispheres still required
    with pytest.raises(DataError, match="subj01/rh_pred_test.npy: missing"):
        read_submission(tmp_path / "no_rh.zip")
    with pytest.raises(DataError, match="holds pickled Python objects"):
        read_submission(tmp_path / "pickle.zip")


def test_damaged_zip_members_are_one_line_errors(two_subject_truth, tmp_path, capsys):
    truth, preds = two_subject_truth
    good = _members(preds)
    lh = "subj01/lh_pred_test.npy"
    crc = _zip(tmp_path / "crc.zip", good, zipfile.ZIP_STORED)
    with zipfile.ZipFile(crc) as zf:
        member = zf.getinfo(lh)
    raw = bytearray(crc.read_bytes())
    end = member.header_offset + 30 + len(lh) + len(member.extra) + member.compress_size
    raw[end - 1] ^= 0xFF  # the last byte of the member's data
    crc.write_bytes(bytes(raw))
    encrypted = _zip(tmp_path / "encrypted.zip", good)
    _patch_central(encrypted, lh, 8, "<H", 0x1)  # flag bit 0: encrypted
    unknown = _zip(tmp_path / "unknown.zip", good)
    _patch_central(unknown, lh, 10, "<H", 99)  # compression method 99
    cases = {
        crc: "damaged member \\(Bad CRC-32",
        encrypted: "encrypted; write the zip without a password",
        unknown: "compression method 99 is not supported",
    }
    for path, message in cases.items():
        with pytest.raises(DataError, match=f"{lh}: {message}") as info:
            score_submission(path, truth)
        assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
        with pytest.raises(DataError, match=message):
            read_submission(path)
    assert main(["score", str(crc), "--truth", str(truth)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {crc}: {lh}: damaged member") and err.count("\n") == 1


def test_zip_members_are_read_only_up_to_their_expected_size(
    two_subject_truth, tmp_path, monkeypatch
):
    import tracemalloc

    from brainencoder.evaluation import submission

    truth, preds = two_subject_truth
    good = _members(preds)
    lh = "subj01/lh_pred_test.npy"
    zeros = bytes(64 << 20)  # 64 MiB that deflate to 64 KiB
    bomb = _zip(tmp_path / "bomb.zip", {**good, lh: zeros})
    assert bomb.stat().st_size < 1 << 20
    # honest sizes: refused from the declared size, before anything is read
    with pytest.raises(
        DataError, match=f"{lh}: 67108864 bytes uncompressed, but a .npy of a float32 array"
    ):
        score_submission(bomb, truth)
    # lying sizes: the right header and data, then 64 MiB more, declared as the right size
    liar = _zip(tmp_path / "liar.zip", {**good, lh: good[lh] + zeros})
    _patch_central(liar, lh, 24, "<I", len(good[lh]))
    # a header that promises more than the truth's shape (its data never come): refused first
    big = _zip(tmp_path / "big.zip", {**good, lh: _header((4000, 3))})
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=f"{lh}: damaged member"):
            score_submission(liar, truth)
        with pytest.raises(DataError, match=r"shape \(4000, 3\), expected \(4, 3\)"):
            score_submission(big, truth)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak  # not the 64 MiB the member holds
    # with nothing to compare with, members are read up to MAX_MEMBER_BYTES
    monkeypatch.setattr(submission, "MAX_MEMBER_BYTES", 1 << 20)
    with pytest.raises(DataError, match=f"{lh}: 67108864 bytes uncompressed, but at most"):
        read_submission(bomb)
    # a header alone that promises more than that: refused before any data is read
    promise = _zip(tmp_path / "promise.zip", {**good, lh: _header((100_000, 3))})
    with pytest.raises(DataError, match=r"shape \(100000, 3\), more than the 1048576 bytes"):
        read_submission(promise)


def test_pickled_or_text_test_responses_are_refused(tmp_path):
    from brainencoder.evaluation.evaluate import read_test_responses

    (tmp_path / "subj01").mkdir()
    evil = np.empty((4, 3), dtype=object)
    np.save(tmp_path / "subj01" / "lh_test_fmri.npy", evil, allow_pickle=True)
    np.save(tmp_path / "subj01" / "rh_test_fmri.npy", np.zeros((4, 2)))
    with pytest.raises(DataError, match="lh_test_fmri.npy: cannot read held-back test responses"):
        read_test_responses(tmp_path, "subj01", 4, {"lh": 3, "rh": 2})
    np.save(tmp_path / "subj01" / "lh_test_fmri.npy", np.full((4, 3), "x"))
    with pytest.raises(DataError, match="of dtype <U1; expected real numbers"):
        read_test_responses(tmp_path, "subj01", 4, {"lh": 3, "rh": 2})
