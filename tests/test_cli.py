import shutil

import numpy as np
import pandas as pd
import pytest

from brainencoder.cli.main import main


def test_cli_synth_validate_prepare(tmp_path, capsys):
    data = tmp_path / "data"
    assert (
        main(
            [
                "synth",
                str(data),
                "--subjects",
                "2",
                "--n-train",
                "40",
                "--n-test",
                "6",
                "--vertices",
                "40",
                "--image-size",
                "32",
            ]
        )
        == 0
    )
    assert main(["validate", str(data)]) == 0
    out = capsys.readouterr().out
    assert "subj02" in out and "no problems found" in out
    assert main(["prepare", str(data), str(tmp_path / "store"), "--image-size", "16"]) == 0
    assert "group vertices" in capsys.readouterr().out


def test_cli_validate_broken_exits_1(synth_root, tmp_path, capsys):
    root = shutil.copytree(synth_root, tmp_path / "data")
    (root / "subj01/roi_masks/lh.all-vertices_fsaverage_space.npy").unlink()
    assert main(["validate", str(root), "--skip-images"]) == 1
    out = capsys.readouterr().out
    assert "ERROR" in out and "lh.all-vertices_fsaverage_space.npy: file not found" in out


def test_cli_errors_are_messages_not_tracebacks(tmp_path, capsys):
    assert main(["prepare", str(tmp_path / "missing"), str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "dataset folder not found" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_demo_end_to_end_small(tmp_path, capsys):
    from brainencoder.cli.demo import run_demo
    from brainencoder.data.synthetic import SyntheticConfig

    cfg = SyntheticConfig(
        n_subjects=2,
        n_train=60,
        n_test=8,
        n_vertices=80,
        image_size=64,
        held_out=1,
        categories=True,
    )
    out = run_demo(
        tmp_path / "demo",
        synthetic=cfg,
        overrides=[
            "epochs=5",  # point moves its read positions over the first epochs
            "batch_size=32",
            "model.img_size=32",
            "model.readout.channels=8",
        ],
    )
    text = capsys.readouterr().out
    assert "challenge score" in text and "pixel ridge" in text
    assert "subj03 test score: adapt" in text and (out["adapt"] / "best.safetensors").exists()
    from brainencoder.data.layout import read_layout
    from brainencoder.data.store import Store
    from brainencoder.evaluation.submission import score_submission

    layout = read_layout(out["data"], Store(out["store"]).names)  # the group subjects
    scores = {
        k: score_submission(out[k], out["truth"], layout)["all"]
        for k in ("submission", "ensemble_submission")
    }
    from brainencoder.evaluation.submission import read_submission, write_submission

    preds = read_submission(out["submission"], layout)
    rolled = {n: {h: np.roll(v, 1, axis=0) for h, v in p.items()} for n, p in preds.items()}
    chance = score_submission(
        write_submission(rolled, layout, tmp_path / "rolled.zip"), out["truth"], layout
    )["all"]
    assert scores["submission"] > chance + 5, (scores, chance)  # images matter, not only means
    assert f"{scores['submission']:.2f}%" in text  # what the demo printed is the zip's score
    assert (out["figures"] / "subj02_pearson_test.png").stat().st_size > 10_000
    report = out["report"].read_text()
    assert "<html" in report[:500].lower()
    assert (
        "planted category of the top 6" in text
        and "ensemble(phase1+phase1-seed2+phase1-seed3)" in text
    )
    ranking = pd.read_csv(out["explore"].parent / "ranking.csv")
    assert len(ranking) == cfg.n_test
    compared = pd.read_csv(out["compare"].parent / "comparison.csv")
    ensemble = "ensemble(phase1+phase1-seed2+phase1-seed3)"
    assert set(compared.run) == {"phase1", "phase2", "pixel-ridge", ensemble}
    for page in ("explore-faces/index.html", "compare/index.html"):  # the report links both
        assert f"href='{page}'" in report


def test_cli_pca(store, tmp_path, capsys):
    from brainencoder.models.pca import GroupPCA

    assert (
        main(
            ["pca", str(store.path), "--out", str(tmp_path / "p.safetensors"), "--components", "5"]
        )
        == 0
    )
    assert "5 components" in capsys.readouterr().out
    assert GroupPCA.load(tmp_path / "p.safetensors").components.shape[0] == 5
    assert (
        main(
            [
                "pca",
                str(store.path),
                "--out",
                str(tmp_path / "q.safetensors"),
                "--components",
                "auto",
            ]
        )
        == 0
    )
    with pytest.raises(SystemExit):
        main(["pca", str(store.path), "--out", str(tmp_path / "r"), "--components", "many"])
    assert "expected a number of components or 'auto'" in capsys.readouterr().err
    assert (
        main(["pca", str(store.path), "--out", str(tmp_path / "r"), "--components", "100000"]) == 1
    )
    assert "cannot fit 100000 PCA components" in capsys.readouterr().err


def test_cli_plot_bad_sphere_folder(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    assert main(["plot", str(run), "--fsaverage-surf", str(tmp_path / "nowhere")]) == 1
    assert "lh.sphere: cannot read the fsaverage sphere" in capsys.readouterr().err
