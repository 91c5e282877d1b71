"""Every command's Python twin writes what its command writes, and refuses what it refuses.

Each ``be.X`` is called, then ``brainencoder X`` with the same settings, and the
outputs are compared: identical bytes where the writer is deterministic (synthetic
data, PCA files, submission zips' members, report pages, figures), identical
tensors and settings where a file header records more (model files), the same
problems, scores and summaries. Both paths run the same code in the same process,
so every comparison is exact (no tolerance).
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import brainencoder as be
from brainencoder.cli.main import main
from brainencoder.evaluation.evaluate import evaluate_run
from brainencoder.runs.run import Run
from brainencoder.util.errors import BrainEncoderError, CheckpointError, ConfigError
from brainencoder.util.ownership import UnsafeOverwriteError
from conftest import TINY_TRAIN

TINY_SYNTH = {"n_subjects": 2, "n_train": 24, "n_test": 3, "n_vertices": 20, "image_size": 16}


def _files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, with its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _model_file(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors and header metadata of a safetensors file (whose key order is not fixed)."""
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _zip_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {name: z.read(name) for name in sorted(z.namelist())}


@pytest.fixture(scope="module")
def runs(store, tmp_path_factory):
    """Two one-epoch encoder runs of other seeds (an ensemble, a soup's ingredients)."""
    root = tmp_path_factory.mktemp("twins")
    cache = [f"cache_dir={root / 'cache'}"]
    return [
        be.train(None, store=store.path, out=root / f"p{seed}", overrides=[*TINY_TRAIN, *cache])
        for seed in (0, 1)
    ]


# ------------------------------------------------------------------------------ data


def test_synth_writes_the_commands_files(tmp_path, capsys):
    config = {**TINY_SYNTH, "held_out": 1, "seed": 3, "world": "edges"}
    out = be.synth(tmp_path / "api", config=config)
    argv = ["synth", str(tmp_path / "cli"), "--subjects", "2", "--n-train", "24", "--n-test"]
    argv += ["3", "--vertices", "20", "--image-size", "16", "--held-out", "1", "--seed", "3"]
    argv += ["--world", "edges"]
    assert main(argv) == 0
    assert "held out of group training: subj03" in capsys.readouterr().out
    assert out == tmp_path / "api"
    api, cli = _files(out), _files(tmp_path / "cli")
    assert api == cli and "subj03/training_split/training_fmri/lh_training_fmri.npy" in api
    be.synth(tmp_path / "retino", config={**TINY_SYNTH, "held_out": 1, "seed": 3})
    assert _files(tmp_path / "retino") != api  # the world reached the generator
    with pytest.raises(ConfigError, match=r"^unknown key\(s\) \['n_subject'\]; valid: "):
        be.synth(tmp_path / "x", config={"n_subject": 2})
    with pytest.raises(ConfigError, match=r"^--repeats and --images apply to --layout simple"):
        be.synth(tmp_path / "x", repeats=2)
    with pytest.raises(BrainEncoderError, match=r"^'n_train' leaves fewer than 20 training"):
        be.synth(tmp_path / "x", config={"n_train": 10})
    assert not (tmp_path / "x").exists()


def test_validate_reports_the_problems_the_command_prints(synth_root, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(synth_root, data, ignore=shutil.ignore_patterns("*.png"))
    (data / "subj02" / "roi_masks" / "rh.floc-faces_challenge_space.npy").unlink()
    np.save(
        data / "subj01" / "training_split" / "training_fmri" / "lh_training_fmri.npy",
        np.zeros((3, 2), np.float32),
    )
    report = be.validate(data, check_images=False)
    problems = [str(p) for p in report.problems]
    assert not report.ok and any("lh_training_fmri.npy" in p for p in problems)
    assert main(["validate", str(data), "--skip-images"]) == 1
    printed = capsys.readouterr().out.splitlines()
    table = report.table().splitlines()
    assert printed[: len(table)] == table and len(table) == 2 + 3  # header, rule, 3 subjects
    assert printed[len(table) : -1] == problems
    n_block = sum(p.blocking for p in report.problems)
    assert printed[-1] == f"{len(problems)} problem(s), {n_block} blocking training"
    with pytest.raises(ConfigError, match=r"^'check_images' must be True or False; got 'no'$"):
        be.validate(data, check_images="no")


def test_pca_writes_the_commands_file(store, tmp_path, capsys):
    fitted = be.pca(store.path, tmp_path / "api.safetensors", components=6, seed=2)
    argv = ["pca", str(store.path), "--out", str(tmp_path / "cli.safetensors")]
    assert main([*argv, "--components", "6", "--seed", "2"]) == 0
    assert f"{fitted.components.shape[0]} components" in capsys.readouterr().out
    assert fitted.components.shape == (6, store.space.n_vertices)
    api = (tmp_path / "api.safetensors").read_bytes()
    assert api == (tmp_path / "cli.safetensors").read_bytes()
    with pytest.raises(ConfigError, match=r"^'components' must be a number of components >= 1"):
        be.pca(store.path, tmp_path / "x.safetensors", components=0)
    with pytest.raises(UnsafeOverwriteError, match=r"is a folder; --out must be a file path"):
        be.pca(store, tmp_path, components=4)


# ------------------------------------------------------------------------------ models


def test_baseline_fits_the_commands_model(store, tmp_path, capsys):
    run = be.baseline(
        "ridge",
        store=store.path,
        out=tmp_path / "api",
        features={"kind": "pixels", "pixel_size": 8},
    )
    argv = ["baseline", "ridge", "--store", str(store.path), "--out", str(tmp_path / "cli")]
    assert main([*argv, "--features", "pixels", "--pixel-size", "8"]) == 0
    assert "(ridge, torch)" in capsys.readouterr().out
    assert run.path == tmp_path / "api" and run.model_kind == "ridge"
    api, cli = (
        load_file(run.path / "ridge.safetensors"),
        load_file(tmp_path / "cli" / "ridge.safetensors"),
    )
    assert api.keys() == cli.keys() and all(np.array_equal(api[k], cli[k]) for k in api)
    settings = [
        {k: v for k, v in Run(p).config.items() if k != "run"} for p in (run.path, tmp_path / "cli")
    ]
    assert settings[0] == settings[1] and settings[0]["features"]["kind"] == "pixels"
    scores = [evaluate_run(p, "testval", store) for p in (run.path, tmp_path / "cli")]
    assert scores[0].equals(scores[1])
    with pytest.raises(ConfigError, match=r"^'kind' must be 'ridge' or 'devkit'; got 'lasso'$"):
        be.baseline("lasso", store=store.path, out=tmp_path / "x")
    with pytest.raises(ConfigError, match=r"^the devkit baseline regresses on trunk features"):
        be.baseline("devkit", store=store.path, out=tmp_path / "x", features={"kind": "pixels"})
    assert not (tmp_path / "x").exists()


def test_soup_writes_the_commands_soup(runs, tmp_path, capsys):
    paths = [r.path for r in runs]
    summary = be.soup(paths, out=tmp_path / "api", uniform=True)
    assert main(["soup", *map(str, paths), "--out", str(tmp_path / "cli"), "--uniform"]) == 0
    assert "uniform soup of 2 runs" in capsys.readouterr().out
    assert summary == json.loads((tmp_path / "cli" / "soup.json").read_text())
    assert summary["kind"] == "uniform" and len(summary["kept"]) == 2
    api = load_file(tmp_path / "api" / "best.safetensors")
    cli = load_file(tmp_path / "cli" / "best.safetensors")
    assert api.keys() == cli.keys() and all(np.array_equal(api[k], cli[k]) for k in api)
    with pytest.raises(ConfigError, match=r"^a soup needs at least two runs"):
        be.soup(paths[0], out=tmp_path / "x")


def _original_checkpoint(space, folder: Path) -> Path:
    """A checkpoint in the original entry's key layout on timm's ``test_vit`` (blocks 0, 1)."""
    import timm
    import torch

    torch.manual_seed(0)
    trunk = timm.create_model("test_vit", pretrained=False).eval()
    gen = torch.Generator().manual_seed(1)
    k, latent, tokens, channels = 6, 4, 10 * 10 + 1, 64  # 160 px / patch 16, class token
    state = {}
    for i in range(2):
        state[f"feat_projs.{i}.proj.weight1"] = torch.randn(k, tokens, generator=gen) * 0.1
        state[f"feat_projs.{i}.proj.weight2"] = torch.randn(k, channels, generator=gen) * 0.1
        state[f"feat_projs.{i}.norm.weight"] = torch.rand(k, generator=gen) + 0.5
        state[f"feat_projs.{i}.norm.bias"] = torch.randn(k, generator=gen)
        state[f"feat_projs.{i}.norm.running_mean"] = torch.randn(k, generator=gen)
        state[f"feat_projs.{i}.norm.running_var"] = torch.rand(k, generator=gen) + 0.5
        state[f"feat_projs.{i}.norm.num_batches_tracked"] = torch.tensor(10)
    state["shared_proj.weight"] = torch.randn(latent, k, generator=gen)
    state["subj_proj.fc.weight"] = torch.randn(8 * latent, k, generator=gen)
    state["subj_proj.fc.bias"] = torch.randn(8 * latent, generator=gen)
    state["embed.weight"] = torch.randn(space.n_vertices, latent, generator=gen)
    state["embed.bias"] = torch.randn(space.n_vertices, generator=gen)
    ckpt = folder / "ckpt-best.pt"
    torch.save({"epoch": 1, "metric": 0.2, "trunk": trunk.state_dict(), "encoder": state}, ckpt)
    return ckpt


def test_import_original_writes_the_commands_model_file(store, tmp_path, capsys):
    ckpt = _original_checkpoint(store.space, tmp_path)
    settings = {"trunk": "test_vit", "layers": [0, 1]}
    model = be.import_original(
        ckpt, data=store.path, out=tmp_path / "api.safetensors", model=settings
    )
    argv = ["import-original", str(ckpt), "--data", str(store.path), "--trunk", "test_vit"]
    argv += ["--layers", "0", "1", "--out", str(tmp_path / "cli.safetensors")]
    assert main(argv) == 0
    assert "test_vit + grouplin readout" in capsys.readouterr().out
    assert model.path == tmp_path / "api.safetensors" and model.subjects == store.names
    (api, api_meta), (cli, cli_meta) = (
        _model_file(tmp_path / f) for f in ("api.safetensors", "cli.safetensors")
    )
    assert api.keys() == cli.keys() and all(np.array_equal(api[k], cli[k]) for k in api)
    assert api_meta == cli_meta and json.loads(api_meta["config"])["layers"] == [0, 1]
    images = np.asarray(store.images[:2])
    ours, loaded = (
        model.model.predict(images, "subj02"),
        be.load(model.path).model.predict(images, "subj02"),
    )
    assert np.array_equal(ours["lh"], loaded["lh"])
    with pytest.raises(CheckpointError, match=r"api.safetensors exists; pass --overwrite"):
        be.import_original(ckpt, data=store.path, out=model.path, model=settings)
    with pytest.raises(ConfigError, match=r"^unknown key\(s\) \['trunks'\]; valid: "):
        be.import_original(
            ckpt, data=store.path, out=tmp_path / "x.safetensors", model={"trunks": "test_vit"}
        )


# ------------------------------------------------------------------------------ outputs


def test_submit_writes_the_commands_zip(runs, synth_root, tmp_path, capsys):
    """An ensemble weighted per ROI on val (``--val-weights roi``), scored against the truth."""
    paths, truth = [r.path for r in runs], synth_root / "truth"
    result = be.submit(
        paths,
        data=synth_root,
        out=tmp_path / "api.zip",
        truth=truth,
        val_weights="roi",
        workers=0,
    )
    argv = ["submit", *map(str, paths), "--data", str(synth_root), "--truth", str(truth)]
    argv += ["--out", str(tmp_path / "cli.zip"), "--workers", "0", "--val-weights", "roi"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "(3 subjects, 2 model(s))" in printed and f"all {result.scores['all']:.2f}" in printed
    assert result.path == tmp_path / "api.zip" and result.n_models == 2
    assert result.scores == be.score(tmp_path / "cli.zip", truth)
    api, cli = _zip_members(result.path), _zip_members(tmp_path / "cli.zip")
    assert api == cli and len(api) == 2 * len(result.subjects)


def test_submit_refuses_what_the_command_refuses(runs, synth_root, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"^'val_weights' must be False, True, 'vertex' or "):
        be.submit(runs[0].path, data=synth_root, out=tmp_path / "a.zip", val_weights="mean")
    with pytest.raises(UnsafeOverwriteError, match=r"--out must end in \.zip"):
        be.submit(runs[0].path, data=synth_root, out=tmp_path / "a.npz")
    argv = ["submit", str(runs[0].path), "--data", str(synth_root), "--out"]
    with pytest.raises(SystemExit):  # argparse: not a choice of --val-weights
        main([*argv, str(tmp_path / "a.zip"), "--val-weights", "mean"])
    assert "invalid choice: 'mean'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_report_writes_the_commands_page(runs, tmp_path, capsys):
    run = runs[0].path
    page = be.report(run, out=tmp_path / "api.html")
    assert main(["report", str(run), "--out", str(tmp_path / "cli.html")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cli.html")
    assert page.read_bytes() == (tmp_path / "cli.html").read_bytes()
    assert run.name in page.read_text()
    with pytest.raises(UnsafeOverwriteError, match=r"--out must end in \.html or \.htm"):
        be.report(run, out=tmp_path / "page.txt")


@pytest.mark.slow  # the cortical maps: the slowest twin
def test_plot_draws_the_commands_figures(runs, store, capsys):
    run = runs[1].path
    evaluate_run(run, "testval", store)
    figures = be.plot(run, metrics=["pearson"])
    first = {p: p.read_bytes() for p in figures}
    assert main(["plot", str(run), "--metric", "pearson"]) == 0
    assert capsys.readouterr().out.split() == [str(p) for p in figures]
    assert {p: p.read_bytes() for p in figures} == first and len(first) >= 2
    with pytest.raises(ConfigError, match=r"^'metrics' must be among \['score', 'pearson', "):
        be.plot(run, metrics=["auc"])
