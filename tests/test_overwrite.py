"""--overwrite replaces only what brainencoder wrote; outputs follow the umask."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from brainencoder.baselines.ridge import fit_ridge_baseline
from brainencoder.cli.main import main
from brainencoder.data.prepare import PrepareOptions, prepare_store
from brainencoder.models.solvers import RIDGE_SOLVERS
from brainencoder.util.ownership import MARKER, owned_kind
from conftest import TINY_TRAIN


def _user_folder(path):
    path.mkdir(parents=True)
    (path / "thesis.tex").write_text("years of work")
    return path


def _train(store, out, *extra):
    return main(
        ["train", "none", *TINY_TRAIN, "--store", str(store.path), "--out", str(out), *extra]
    )


def test_prepare_refuses_the_data_itself_and_foreign_folders(synth_root, tmp_path, capsys):
    before = sorted(p.relative_to(synth_root) for p in synth_root.rglob("*"))
    for out in (synth_root, synth_root / "subj01", synth_root.parent):
        assert main(["prepare", str(synth_root), str(out), "--overwrite"]) == 1
        assert "holds, contains or lies inside the input" in capsys.readouterr().err
    assert sorted(p.relative_to(synth_root) for p in synth_root.rglob("*")) == before
    mine = _user_folder(tmp_path / "mine")
    assert main(["prepare", str(synth_root), str(mine), "--overwrite", "--image-size", "32"]) == 1
    assert "files brainencoder did not write" in capsys.readouterr().err
    assert (mine / "thesis.tex").read_text() == "years of work"


def test_prepare_overwrite_replaces_its_own_store(synth_root, tmp_path):
    store = prepare_store(synth_root, tmp_path / "s", PrepareOptions(image_size=32), progress=False)
    assert owned_kind(store.path) == "store" and (store.path / MARKER).is_file()
    again = prepare_store(
        synth_root, tmp_path / "s", PrepareOptions(image_size=40), overwrite=True, progress=False
    )
    assert again.image_size == 40


def test_train_refuses_cwd_store_and_foreign_folders(store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(_user_folder(tmp_path / "work"))
    assert _train(store, ".", "--overwrite") == 1
    assert "is or contains the current folder" in capsys.readouterr().err
    assert _train(store, str(store.path / "runs"), "--overwrite") == 1
    assert "lies inside the input" in capsys.readouterr().err
    other = _user_folder(tmp_path / "other")
    assert _train(store, str(other), "--overwrite") == 1
    assert "files brainencoder did not write" in capsys.readouterr().err
    assert (other / "thesis.tex").exists() and (tmp_path / "work" / "thesis.tex").exists()
    ridge = tmp_path / "ridge"
    fit_ridge_baseline(store, ridge, overwrite=True)
    assert _train(store, str(ridge), "--overwrite") == 1
    assert "it holds a brainencoder ridge-run, not a brainencoder run" in capsys.readouterr().err
    run = tmp_path / "run"
    assert _train(store, str(run)) == 0
    assert owned_kind(run) == "run"
    assert _train(store, str(run), "--overwrite") == 0


def test_baseline_overwrite_only_its_own(store, tmp_path, capsys):
    other = _user_folder(tmp_path / "other")
    argv = ["baseline", "ridge", "--store", str(store.path), "--img-size", "32"]
    assert main([*argv, "--out", str(other), "--overwrite"]) == 1
    assert "files brainencoder did not write" in capsys.readouterr().err
    assert main([*argv, "--out", str(store.path), "--overwrite"]) == 1
    assert "lies inside the input" in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "r")]) == 0
    assert main([*argv, "--out", str(tmp_path / "r"), "--overwrite"]) == 0
    assert owned_kind(tmp_path / "r") == "ridge-run"


def test_outputs_follow_the_umask(synth_root, tmp_path):
    old = os.umask(0o022)
    try:
        store = prepare_store(
            synth_root, tmp_path / "s", PrepareOptions(image_size=32), progress=False
        )
    finally:
        os.umask(old)
    for name in ("images.u8", "manifest.json", "space.npz"):
        mode = stat.S_IMODE((store.path / name).stat().st_mode)
        assert mode == 0o644, (name, oct(mode))


@pytest.mark.numerics
@pytest.mark.parametrize("solver", ["torch", "himalaya", "sklearn"])
def test_every_ridge_solver_fits_the_ridge_solution(rng, solver):
    x = rng.standard_normal((80, 6)).astype(np.float32)
    y = (x @ rng.standard_normal((6, 3)) + 0.1 * rng.standard_normal((80, 3))).astype(np.float32)
    fit = RIDGE_SOLVERS.get(solver)(x, y, np.array([10.0]), 5)
    xc, yc = x - x.mean(0), y - y.mean(0)
    coef = np.linalg.solve(xc.T @ xc + 10.0 * np.eye(6), xc.T @ yc)
    np.testing.assert_allclose(fit.coef, coef, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(fit.intercept, y.mean(0) - x.mean(0) @ coef, rtol=1e-3, atol=1e-4)


def test_out_that_is_a_folder_is_refused_before_any_work(store, tmp_path, capsys):
    folder = tmp_path / "taken"
    folder.mkdir()
    for argv in (
        ["pca", str(store.path), "--out", str(folder), "--components", "3"],
        [
            "predict",
            str(tmp_path / "none"),
            str(tmp_path),
            "--subject",
            "subj01",
            "--out",
            str(tmp_path / "p.txt"),
        ],
        ["submit", str(tmp_path / "none"), "--data", str(tmp_path), "--out", str(folder)],
        ["report", str(tmp_path / "none"), "--out", str(folder)],
    ):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "is a folder; --out must be a file path" in err or "--out must end in" in err, err
