"""Your own experiment: the simple layout, its noise ceilings, and every command on it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from brainencoder.cli.main import main
from brainencoder.core.noise_ceiling import (
    estimate_ncsnr,
    mean_inverse_trials,
    ncsnr_from_noise_variance,
    noise_ceiling,
)
from brainencoder.data.layout import read_layout
from brainencoder.data.prepare import PrepareOptions, prepare_store
from brainencoder.data.simple_layout import read_simple_layout
from brainencoder.data.synthetic_simple import write_simple_layout
from brainencoder.data.validate import validate_dataset
from brainencoder.util.errors import DataError, StoreError
from conftest import TINY_TRAIN

DOCS = Path(__file__).parents[1] / "docs" / "own-data.md"
SUBJECTS = ["subj01", "subj02", "subj03"]


@pytest.fixture(scope="module")
def simple_root(synth_root, tmp_path_factory):
    """The SMALL synthetic dataset in the simple layout, 3 trials per image (read-only)."""
    return write_simple_layout(synth_root, tmp_path_factory.mktemp("own") / "simple", repeats=3)


@pytest.fixture(scope="module")
def simple_store(simple_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("own-store") / "store"
    return prepare_store(simple_root, out, PrepareOptions(image_size=32), workers=2, progress=False)


def _copy(root: Path, tmp_path: Path) -> Path:
    return shutil.copytree(root, tmp_path / "data", ignore=shutil.ignore_patterns("truth"))


# ----------------------------------------------------------------------------- the formula


def test_ncsnr_recovers_a_known_noise_ceiling(rng):
    """Signal sd 1, trial noise sd s -> ncsnr 1/s; NC of 3 trials = s**-2 / (s**-2 + 1/3)."""
    n_images, repeats, n_vertices = 4000, 3, 3
    signal = rng.standard_normal((n_images, n_vertices))
    noise_sd = np.array([0.5, 1.0, 2.0])
    trials = signal[None] + noise_sd * rng.standard_normal((repeats, n_images, n_vertices))
    sessions = np.repeat(np.arange(repeats), n_images)  # one session per repeat
    offset = 5.0 * sessions[:, None]  # a session's shift goes with its z-scoring
    images = np.tile(np.arange(n_images), repeats)
    ncsnr = estimate_ncsnr(trials.reshape(-1, n_vertices) + offset, images, sessions)
    np.testing.assert_allclose(ncsnr, 1 / noise_sd, rtol=0.08)
    expected = (1 / noise_sd**2) / (1 / noise_sd**2 + 1 / 3)
    np.testing.assert_allclose(noise_ceiling(ncsnr, 3), expected, atol=0.03)
    # mixed trial counts: 1/n is the mean of 1/n_i (A/3 + B/2 + C/1) / (A + B + C)
    assert mean_inverse_trials([3, 3, 2, 1]) == pytest.approx((2 / 3 + 1 / 2 + 1) / 4)
    assert noise_ceiling(np.array([1.0]), [3, 3, 2, 1])[0] == pytest.approx(
        1 / (1 + (2 / 3 + 1 / 2 + 1) / 4)
    )
    # no noise -> NC 1; all noise -> 0
    assert ncsnr_from_noise_variance(np.array([0.0, 1.0, 1.5])).tolist() == [np.inf, 0.0, 0.0]
    assert noise_ceiling(np.array([np.inf, 0.0]), 2).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="no image has two or more trials"):
        estimate_ncsnr(trials[0], np.arange(n_images))


# ----------------------------------------------------------------------------- prepare


def test_simple_layout_prepares_into_the_challenge_store(store, simple_store, synth_root):
    """Same images, ids, splits and space; training data equal to float32 rounding (1e-5)."""
    assert simple_store.names == store.names
    np.testing.assert_array_equal(simple_store.images, store.images)
    np.testing.assert_array_equal(simple_store.nsd_ids, store.nsd_ids)
    for name in SUBJECTS:
        a, b = store.subject(name), simple_store.subject(name)
        assert (a.n_train, a.n_test, a.n_vertices) == (b.n_train, b.n_test, b.n_vertices)
        assert all(np.array_equal(a.splits[k], b.splits[k]) for k in a.splits)
        np.testing.assert_array_equal(a.test_rows, b.test_rows)
        np.testing.assert_allclose(simple_store.fmri(name), store.fmri(name), rtol=0, atol=1e-5)
        for hemi in ("lh", "rh"):
            planted = np.load(synth_root / "truth" / name / f"{hemi}_test_fmri.npy")
            got = np.load(simple_store.path / "truth" / name / f"{hemi}_test_fmri.npy")
            np.testing.assert_allclose(got, planted, rtol=0, atol=1e-5)
    assert {k: v for k, v in simple_store.identity().items() if k != "fingerprint"} == {
        k: v for k, v in store.identity().items() if k != "fingerprint"
    }
    source = simple_store.manifest["source"]
    assert source["layout"] == "simple" and Path(source["root"]) == simple_store.path / "source"
    converted = read_layout(source["root"])  # ROI labels and mappings, read as the challenge's
    original = read_layout(synth_root)
    for name in SUBJECTS:
        assert converted[name].roi_groups == original[name].roi_groups
        for group in original[name].roi_groups:
            assert converted[name].load_mapping(group) == original[name].load_mapping(group)
            for hemi in ("lh", "rh"):
                for space in ("challenge", "fsaverage"):
                    np.testing.assert_array_equal(
                        converted[name].load_rois(group, hemi, space),
                        original[name].load_rois(group, hemi, space),
                    )


def test_noise_ceilings_from_repeats_match_the_planted_ones(simple_store, simple_root):
    """SMALL (78-92 images x 3 trials per subject): r > 0.8, MAE < 0.12 (measured 0.87, 0.087)."""
    est, planted = [], []
    for name in SUBJECTS:
        for hemi in ("lh", "rh"):
            est.append(np.load(simple_store.path / "truth" / name / f"{hemi}_noise_ceiling.npy"))
            planted.append(np.load(simple_root / "truth" / name / f"{hemi}_noise_ceiling.npy"))
            train = simple_store.path / "truth" / "train" / name / f"{hemi}_noise_ceiling.npy"
            np.testing.assert_allclose(np.load(train), est[-1])  # 3 trials everywhere
    est, planted = np.concatenate(est), np.concatenate(planted)
    assert np.corrcoef(est, planted)[0, 1] > 0.8
    assert np.abs(est - planted).mean() < 0.12
    assert abs((est - planted).mean()) < 0.03  # unbiased
    # the streamed estimate is the in-memory formula on the raw trials
    subj = read_simple_layout(simple_root, ["subj02"]).subjects["subj02"]
    raw = np.load(subj.response_path("rh"))[subj.trial_row]
    order = np.argsort(subj.vertices["rh"])
    ncsnr = estimate_ncsnr(raw[:, order], subj.trial_image, subj.trials.session)
    stored = np.load(simple_store.path / "truth" / "subj02" / "rh_ncsnr.npy")
    np.testing.assert_allclose(stored, ncsnr, rtol=1e-5)


def test_images_from_an_array_or_hdf5_file(synth_root, store, tmp_path):
    pytest.importorskip("h5py")
    import h5py

    root = write_simple_layout(synth_root, tmp_path / "npy", repeats=1, images="npy")
    subj = root / "subj02"
    with h5py.File(subj / "images.h5", "w") as fh:
        fh.create_dataset("stimuli", data=np.load(subj / "images.npy"), chunks=(1, 48, 48, 3))
    (subj / "images.npy").unlink()
    out = prepare_store(
        root, tmp_path / "s", PrepareOptions(image_size=32), workers=2, progress=False
    )
    np.testing.assert_array_equal(out.images, store.images)
    np.testing.assert_array_equal(out.fmri("subj02"), store.fmri("subj02"))  # one trial: exact
    assert not (out.path / "truth" / "subj01" / "lh_noise_ceiling.npy").exists()  # no repeats


def test_prepare_resumes_a_killed_conversion(simple_root, simple_store, tmp_path):
    out = tmp_path / "store"
    shutil.copytree(simple_store.path, out)
    (out / "manifest.json").unlink()  # as if killed while converting subj02's images
    (out / "source" / "subj02" / ".converted").unlink()
    images = out / "source" / "subj02" / "test_split" / "test_images"
    for path in sorted(images.iterdir())[2:]:
        path.unlink()
    (out / "fmri" / "subj02.npy").unlink()
    again = prepare_store(
        simple_root, out, PrepareOptions(image_size=32), workers=1, progress=False
    )
    np.testing.assert_array_equal(again.fmri("subj02"), simple_store.fmri("subj02"))
    assert len(list(images.iterdir())) == simple_store.subject("subj02").n_test
    with pytest.raises(StoreError, match="already holds a store of other data or options"):
        prepare_store(
            simple_root, out, PrepareOptions(image_size=32, noise_ceiling=False), progress=False
        )


# ----------------------------------------------------------------------------- bad input


def _break_columns(root: Path) -> tuple[Path, str]:
    path = root / "subj02" / "trials.csv"
    lines = path.read_text().splitlines()
    path.write_text(
        "\n".join(",".join(line.split(",")[:1] + line.split(",")[2:]) for line in lines)
    )
    return path, r"subj02/trials.csv: missing column\(s\) \['row'\]"


def _duplicate_vertex(root: Path) -> tuple[Path, str]:
    path = root / "subj01" / "responses" / "rh.vertices.npy"
    vertices = np.load(path)
    vertices[5] = vertices[2]
    np.save(path, vertices)
    return path, r"subj01/responses/rh.vertices.npy: duplicate vertex indices: \[\d+\]"


def _absent_image(root: Path) -> tuple[Path, str]:
    path = root / "subj03" / "trials.csv"
    lines = path.read_text().splitlines()
    lines[4] = "nope.png," + lines[4].split(",", 1)[1]
    path.write_text("\n".join(lines) + "\n")
    return path, r"subj03/trials.csv: 1 line\(s\): trials name images that are not in images/ "


def _nan_response(root: Path) -> tuple[Path, str]:
    path = root / "subj02" / "responses" / "lh.npy"
    responses = np.load(path)
    responses[7, 3] = np.nan
    np.save(path, responses)
    return path, r"subj02/responses/lh.npy: NaN or inf at row 7; fix the file, or prepare with"


@pytest.mark.parametrize(
    "breaker", [_break_columns, _duplicate_vertex, _absent_image, _nan_response]
)
def test_bad_input_is_one_line_naming_the_file_and_nothing_is_written(
    breaker, simple_root, tmp_path
):
    root = _copy(simple_root, tmp_path)
    path, message = breaker(root)
    out = tmp_path / "store"
    with pytest.raises(DataError, match=message) as info:
        prepare_store(root, out, PrepareOptions(image_size=32), workers=1, progress=False)
    assert "\n" not in str(info.value)
    assert not out.exists()
    report = validate_dataset(root, check_images=False)  # validate lists it by file
    assert not report.ok
    assert any(p.path == path and p.blocking for p in report.problems), report.problems


def test_a_noise_ceiling_needs_repeated_trials(synth_root, tmp_path, capsys):
    root = write_simple_layout(synth_root, tmp_path / "once", repeats=1)
    out = tmp_path / "store"
    with pytest.raises(DataError, match=r"subj01/trials.csv: every image has one trial, so no"):
        prepare_store(root, out, PrepareOptions(image_size=32, noise_ceiling=True), progress=False)
    assert not out.exists()
    assert main(["prepare", str(root), str(out), "--image-size", "32", "--noise-ceiling"]) == 1
    assert "every image has one trial" in capsys.readouterr().err
    assert not out.exists()
    report = validate_dataset(root, check_images=False)
    assert report.ok and any("no noise ceiling" in p.message for p in report.problems)
    with pytest.raises(DataError, match="noise ceilings are estimated from the repeated trials"):
        prepare_store(
            synth_root, out, PrepareOptions(image_size=32, noise_ceiling=True), progress=False
        )


def test_validate_lists_every_problem_of_the_layout(simple_root, tmp_path, capsys):
    root = _copy(simple_root, tmp_path)
    _break_columns(root)
    _duplicate_vertex(root)
    rois = root / "subj03" / "rois"
    (rois / "rh.streams.npy").unlink()
    (rois / "floc-faces.json").write_text('{"0": "Unknown", "x": 3}')
    assert main(["validate", str(root), "--skip-images"]) == 1
    out = capsys.readouterr().out
    for expected in (
        "subj02/trials.csv: missing column(s) ['row']",
        "subj01/responses/rh.vertices.npy: duplicate vertex indices",
        "subj03/rois/rh.streams.npy: not found; each ROI group needs both hemispheres",
        "subj03/rois/floc-faces.json: expected labels (integers >= 0, as text)",
    ):
        assert expected in out, out
    assert re.search(r"subj03 +68 +10 +234 +78 +144 +144", out)  # the table of subj03


# ----------------------------------------------------------------------------- the commands


def test_train_evaluate_submit_and_adapt_run_on_it(simple_root, tmp_path_factory, tmp_path):
    from brainencoder.evaluation.evaluate import evaluate_run
    from brainencoder.evaluation.submission import score_submission
    from brainencoder.experiments.adapt import AdaptConfig, adapt
    from brainencoder.training.config import load_config
    from brainencoder.training.loop import train

    group = prepare_store(
        simple_root,
        tmp_path / "group",
        PrepareOptions(image_size=32),
        subjects=SUBJECTS[:2],
        progress=False,
    )
    run = tmp_path / "run"
    cache = tmp_path_factory.getbasetemp() / "cache"
    train(load_config(None, [*TINY_TRAIN, f"cache_dir={cache}"]), group.path, run)
    truth = group.path / "truth"
    table = evaluate_run(run, "test", noise_ceiling=truth)
    assert {"score", "pearson"} <= set(table.metric) and {"V1v", "FFA-1"} <= set(table.roi)
    zip_path = tmp_path / "sub.zip"
    source = group.manifest["source"]["root"]
    assert main(["submit", str(run), "--data", source, "--out", str(zip_path)]) == 0
    assert np.isfinite(score_submission(zip_path, truth, read_layout(source))["all"])
    summary = adapt(
        run, simple_root, "subj03", tmp_path / "ad", n_images=30, config=AdaptConfig(epochs=2)
    )
    assert summary["finished"]
    assert main(["evaluate", str(tmp_path / "ad"), "--split", "testval"]) == 0


def test_the_docs_example_runs_as_written(tmp_path, monkeypatch, capsys):
    """The page's first shell block: synth, validate, prepare (train is tested above)."""
    block = re.search(r"```bash\n(.*?)```", DOCS.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    lines = [line.split("#")[0].split() for line in block.splitlines() if line.strip()]
    ran = 0
    for words in lines:
        assert words[0] == "brainencoder"
        if words[1] in ("synth", "validate", "prepare"):
            assert main(words[1:]) == 0, capsys.readouterr()
            ran += 1
    assert ran == 3
