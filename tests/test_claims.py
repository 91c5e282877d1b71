"""Promises of the README that users act on, one test each.

Each test fails when the behaviour it names is removed: interrupting training
with SIGTERM, reading format-1 model files, adapt's rows, refusing pickled
``.npy`` images, predict's disk check, recognising older output folders,
BatchNorm statistics of a frozen trunk, packaged configs, what a run's
``config.yaml`` records, and LoRA weight decay.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from brainencoder.cli.main import main
from brainencoder.models.encoder import create_encoder
from brainencoder.models.modelfile import load_encoder, save_encoder
from brainencoder.training.config import load_config
from brainencoder.training.loop import train
from brainencoder.util.errors import BrainEncoderError, DataError
from conftest import TINY_TRAIN, train_cli


@pytest.fixture(scope="module")
def tiny_run(store, tmp_path_factory):
    """A trained one-epoch run (and its overrides)."""
    root = tmp_path_factory.mktemp("claims")
    overrides = [*TINY_TRAIN, f"cache_dir={root / 'cache'}"]
    train(load_config(None, overrides), store.path, root / "run")
    return root / "run"


# --------------------------------------------------------------------------- SIGTERM


def test_sigterm_during_training_saves_a_checkpoint(store, tmp_path):
    """A cluster's preemption (SIGTERM) stops training after the step with a checkpoint."""
    run = tmp_path / "run"
    overrides = [*TINY_TRAIN, "epochs=200", "log_every=1", f"cache_dir={tmp_path / 'cache'}"]
    proc = subprocess.Popen(
        [sys.executable, *train_cli(overrides, store, run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:  # until training steps run
        if metrics.exists() and "train/loss" in metrics.read_text():
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted: saved a checkpoint in" in err and "continue with --resume" in err
    pointer = json.loads((run / "checkpoints" / "latest.json").read_text())
    state = json.loads((run / "checkpoints" / pointer["name"] / "state.json").read_text())
    assert 0 < state["step"] < 200 and not (run / "summary.json").exists()


# --------------------------------------------------------------------------- model files


def _as_format_1(path: Path, out: Path) -> None:
    """Rewrite a grouplin_seq model file in the first release's layout (one ``head``)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    config = json.loads(meta["config"])
    readout = config.pop("readout")
    assert readout["name"] == "grouplin_seq"
    config.pop("trunk_family", None)  # not in the first release
    config.update({k: readout[k] for k in ("hidden_dim", "latent_dim", "dropout")})
    subjects = json.loads(meta["subjects"])
    old = {}
    for key, value in tensors.items():
        if key.startswith("model.readout.per_subject."):
            continue
        if key.startswith("model.readout."):
            key = "model.head." + key[len("model.readout.") :].replace(".proj.", ".")
        old[key] = value
    for part in ("weight", "bias"):
        old[f"model.head.subject.{part}"] = torch.stack(
            [tensors[f"model.readout.per_subject.{name}.{part}"] for name in subjects]
        )
    meta.update(format_version="1", config=json.dumps(config))
    save_file(old, str(out), metadata=meta)


def test_format_1_model_files_load_as_grouplin_seq(store, tmp_path):
    torch.manual_seed(0)
    model = create_encoder(
        "tiny", store.space, img_size=32, readout={"hidden_dim": 8, "latent_dim": 4}
    )
    with torch.no_grad():  # subjects that differ, so a mixed-up subject map shows
        for i, name in enumerate(store.names):
            model.readout.per_subject[name].bias.fill_(0.1 * (i + 1))
        model.readout.shared.weight.normal_()
    save_encoder(model, tmp_path / "v2.safetensors")
    _as_format_1(tmp_path / "v2.safetensors", tmp_path / "v1.safetensors")
    back = load_encoder(tmp_path / "v1.safetensors")
    assert back.config.readout["name"] == "grouplin_seq"
    assert back.config.readout["hidden_dim"] == 8 and back.config.readout["latent_dim"] == 4
    images = np.asarray(store.images[:4])
    for name in store.names:
        a, b = model.eval().predict(images, name), back.predict(images, name)
        for h in ("lh", "rh"):
            np.testing.assert_array_equal(a[h], b[h])


# --------------------------------------------------------------------------- adapt


def test_adapt_never_touches_the_subjects_test_val_rows(store, tiny_run, tmp_path, monkeypatch):
    from brainencoder.data.store import Store
    from brainencoder.experiments.adapt import AdaptConfig, Overwrite, adapt, choose_rows

    subject = "subj01"  # neither its val nor its testval rows: evaluate scores them
    testval = set(store.split_rows(subject, "testval").tolist())
    testval |= set(store.split_rows(subject, "val").tolist())
    pool = set(store.split_rows(subject, "train").tolist())
    assert testval and not testval & pool
    for seed in range(4):
        for n in (10, len(pool) // 2, None):
            train_rows, val_rows = choose_rows(store, subject, n, seed, 0.15)
            used = set(train_rows.tolist()) | set(val_rows.tolist())
            assert not used & testval and used <= pool
            assert len(used) == (len(pool) if n is None else n)
    # the whole command: every fMRI row of the subject it reads is a train or val row
    read = []
    original = Store.read_fmri

    def recording(self, name, rows):
        if name == subject:
            read.extend(np.asarray(rows).tolist())
        return original(self, name, rows)

    monkeypatch.setattr(Store, "read_fmri", recording)
    summary = adapt(
        tiny_run,
        store.path,
        subject,
        tmp_path / "ad",
        config=AdaptConfig(epochs=1),
        overwrite=Overwrite(subject=True),
    )
    assert summary["n_train_images"] + summary["n_val_images"] == len(pool)
    # it trains and picks its pull on train-split rows only; the store's val rows are
    # read once, after training, to report the zero-shot and adapted scores side by side
    val = set(store.split_rows(subject, "val").tolist())
    assert read and not set(read) & (testval - val)
    assert set(read) - pool == val


# --------------------------------------------------------------------------- inputs


class _Sentinel:
    """Pickled into an object array: unpickling it would create a folder."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_npy_image_arrays_are_never_unpickled(store, tiny_run, tmp_path, capsys):
    from brainencoder.data.sources import ImageArray

    sentinel = tmp_path / "code-ran"
    bad = tmp_path / "images.npy"
    array = np.empty((1,), dtype=object)
    array[0] = _Sentinel(sentinel)
    np.save(bad, array, allow_pickle=True)
    with pytest.raises(DataError, match="not a readable .npy array"):
        ImageArray(bad)
    argv = ["predict", str(tiny_run), str(bad), "--subject", "subj01"]
    assert main([*argv, "--out", str(tmp_path / "p.npz")]) == 1
    assert "images.npy" in capsys.readouterr().err
    assert not sentinel.exists()
    # the check is the loader's: the same file with pickles allowed would run the code
    np.load(bad, allow_pickle=True)
    assert sentinel.exists()


def test_predict_npy_checks_the_disk_first(store, tiny_run, tmp_path, monkeypatch, capsys):
    import brainencoder.util.fileio as fileio

    images = tmp_path / "images.npy"
    np.save(images, np.asarray(store.images[:5]))
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda p: usage(10**9, 10**9, 1000))
    out = tmp_path / "out" / "pred.npy"
    out.parent.mkdir()
    argv = ["predict", str(tiny_run), str(images), "--subject", "subj01", "--out", str(out)]
    assert main(argv) == 1
    assert "not enough disk space for the predictions" in capsys.readouterr().err
    assert sorted(out.parent.iterdir()) == []  # nothing written, not even aside
    monkeypatch.undo()
    assert main(argv) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["pred_lh.npy", "pred_rh.npy"]


# --------------------------------------------------------------------------- ownership


def test_folders_from_before_the_marker_are_recognised_and_look_alikes_refused(
    store, tiny_run, tmp_path
):
    from brainencoder.baselines.ridge import fit_ridge_baseline
    from brainencoder.util.ownership import MARKER, check_replaceable, owned_kind

    old_store = shutil.copytree(store.path, tmp_path / "store")
    old_run = shutil.copytree(tiny_run, tmp_path / "run")
    old_ridge = tmp_path / "ridge"
    fit_ridge_baseline(store, old_ridge)
    for folder, kind in ((old_store, "store"), (old_run, "run"), (old_ridge, "ridge-run")):
        (folder / MARKER).unlink()  # as written before markers existed
        assert owned_kind(folder) == kind
        check_replaceable(folder, kind)
        other = "run" if kind != "run" else "store"
        with pytest.raises(BrainEncoderError, match=f"holds a brainencoder {kind}"):
            check_replaceable(folder, other)

    looks = {
        "plan.json": [
            json.dumps({"format_version": 1, "options": {}}),  # no fingerprint
            "{not json",
            json.dumps([1, 2]),
        ],
        "config.yaml": [
            "model: x\nbrainencoder_version: 0.1\n",  # no run header
            "run:\n  seed: 1\n",  # a header without brainencoder's fields
            "# run:\nbrainencoder_version: 0.1\n",
        ],
    }
    for name, texts in looks.items():
        for i, text in enumerate(texts):
            folder = tmp_path / f"user-{name}-{i}"
            folder.mkdir()
            (folder / name).write_text(text)
            (folder / "thesis.tex").write_text("years of work")
            assert owned_kind(folder) is None, (name, text)
            for kind in ("store", "run", "ridge-run"):
                with pytest.raises(BrainEncoderError, match="files brainencoder did not write"):
                    check_replaceable(folder, kind)


# --------------------------------------------------------------------------- BatchNorm


def _trunk_batchnorm_buffers(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors = load_file(str(run / "best.safetensors"))
    keys = [k for k in tensors if k.startswith("model.trunk.") and "running_" in k]
    assert keys
    return {k: tensors[k] for k in keys}


def test_frozen_trunk_and_trunk_bn_eval_keep_batchnorm_statistics(store, tmp_path):
    """Phase 1 from images (the trunk runs every step, frozen) and phase 2 with
    ``trunk_bn_eval`` leave the trunk's BatchNorm statistics as they were; without
    ``trunk_bn_eval`` phase 2 changes them (so the test can tell)."""
    base = [a for a in TINY_TRAIN if not a.startswith("cache_features")]
    base += ["cache_features=false", "train_fraction=0.3"]  # a few steps through the trunk
    train(load_config(None, base), store.path, tmp_path / "p1")
    start = create_encoder("tiny", store.space, img_size=32).state_dict()
    p1 = _trunk_batchnorm_buffers(tmp_path / "p1")
    for key, value in p1.items():
        assert torch.equal(value, start[key[len("model.") :]]), key
    phase2 = ["epochs=1", "batch_size=32", "train_fraction=0.3", "train_trunk=true"]
    phase2.append(f"init_from={tmp_path / 'p1'}")
    for bn_eval, same in (("true", True), ("false", False)):
        out = tmp_path / f"p2-{bn_eval}"
        train(load_config(None, [*phase2, f"trunk_bn_eval={bn_eval}"]), store.path, out)
        p2 = _trunk_batchnorm_buffers(out)
        assert all(torch.equal(p1[k], p2[k]) for k in p1) is same
        weights = load_encoder(out / "best.safetensors").state_dict()
        assert not torch.equal(  # the trunk did train
            weights["trunk.model.layer3.0.conv1.weight"],
            load_encoder(tmp_path / "p1" / "best.safetensors").state_dict()[
                "trunk.model.layer3.0.conv1.weight"
            ],
        )


# --------------------------------------------------------------------------- configs


PACKAGED = ("phase1", "phase2", "demo", "demo_phase2")


def test_packaged_config_names_resolve_from_any_folder(store, tmp_path, monkeypatch, capsys):
    import importlib.resources

    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    folder = importlib.resources.files("brainencoder") / "configs"
    for name in PACKAGED:
        assert (folder / f"{name}.yaml").is_file()
        # an unknown key is only reported once the named config was found and read
        argv = ["train", name, "lrr=1", "--store", str(store.path), "--out", "r"]
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "unknown key(s) ['lrr']" in err, (name, err)


@pytest.mark.slow
def test_packaged_configs_are_in_the_built_package(store, tmp_path):
    """Built as a wheel and unpacked elsewhere (not the checkout), ``train demo`` finds
    its config inside the installed package."""
    src = Path(__file__).parents[1]
    pkg = tmp_path / "pkg"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(src / "src", pkg / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(src / name, pkg / name)
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run(
        [*pip, "-w", str(tmp_path / "wheel"), str(pkg)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    site = tmp_path / "site"
    with zipfile.ZipFile(next((tmp_path / "wheel").glob("*.whl"))) as wheel:
        wheel.extractall(site)
    code = (
        "import sys, brainencoder; from brainencoder.cli.main import main; "
        f"assert brainencoder.__file__.startswith({str(site)!r}), brainencoder.__file__; "
        f"sys.exit(main(['train', 'demo', 'lrr=1', '--store', {str(store.path)!r}, "
        "'--out', 'r']))"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True
    )
    assert result.returncode == 1 and "unknown key(s) ['lrr']" in result.stderr, result.stderr


def test_run_config_records_version_git_revision_and_model_kind(tiny_run):
    import yaml

    from brainencoder.util.version import __version__, git_revision

    header = yaml.safe_load((tiny_run / "config.yaml").read_text())["run"]
    assert header["model_kind"] == "encoder"
    assert header["brainencoder_version"] == __version__
    assert header["git_revision"] == git_revision()
    package = Path(sys.modules["brainencoder"].__file__).parent
    checkout = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=package, capture_output=True, text=True
    )
    if checkout.returncode == 0:  # the tests run from a git checkout
        assert header["git_revision"] == checkout.stdout.strip()
        assert len(header["git_revision"]) == 40


# --------------------------------------------------------------------------- LoRA


@pytest.mark.parametrize("decay", [False, True])
def test_lora_weight_decay_true_decays_the_factors(store, decay):
    """One AdamW step with zero gradients: only weight decay moves a parameter."""
    from brainencoder.models.lora import apply_lora, lora_layers
    from brainencoder.training.step import make_optimizer

    config = load_config(
        None,
        [
            "model.img_size=32",
            "weight_decay=0.5",
            "lr=0.1",
            f"lora={{rank: 2, targets: ['layer3.*.conv1'], weight_decay: {str(decay).lower()}}}",
        ],
    )
    model = create_encoder("tiny", store.space, img_size=32, readout={"latent_dim": 4})
    model.set_trunk_mode(False)
    apply_lora(model.trunk.model, config.lora_config())
    layers = list(lora_layers(model.trunk).values())
    assert layers
    for layer in layers:
        layer.lora_a.requires_grad_(True)
        layer.lora_b.requires_grad_(True)
        with torch.no_grad():
            layer.lora_b.fill_(1.0)
    before = [(lay.lora_a.clone(), lay.lora_b.clone()) for lay in layers]
    optimizer = make_optimizer(model, config, torch.device("cpu"))
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    optimizer.step()
    shrink = 1 - 0.1 * 0.5 if decay else 1.0
    for layer, (a, b) in zip(layers, before, strict=True):
        torch.testing.assert_close(layer.lora_a, a * shrink, rtol=1e-6, atol=0)
        torch.testing.assert_close(layer.lora_b, b * shrink, rtol=1e-6, atol=0)
    assert dataclasses.asdict(config.lora_config())["weight_decay"] is decay


# --------------------------------------------------------------------------- readouts


@pytest.mark.parametrize(
    "readout",
    [
        ["model.readout.name=point", "model.readout.channels=4"],
        ["model.readout.name=roi_query", "model.readout.dim=8"],
        ["model.readout.latent_dim=4"],  # grouplin_seq: its PCA mean is the same mean
    ],
)
def test_a_new_readout_starts_at_the_training_mean(store, readout):
    """``initialize(mean_response)`` is called with every vertex's mean training response
    (over the subjects that have the vertex) when a readout is built from scratch."""
    from brainencoder.training.distributed import DistInfo
    from brainencoder.training.setup import prepare_model

    sums = np.zeros(store.space.n_vertices)
    counts = np.zeros(store.space.n_vertices)
    for name in store.names:
        rows = store.split_rows(name, "train")
        cols = store.space.subject_columns(name)
        sums[cols] += store.read_fmri(name, rows).sum(0, dtype=np.float64)
        counts[cols] += rows.size
    expected = sums / np.maximum(counts, 1)
    assert np.abs(expected).max() > 1e-2  # a start at 0 would not pass
    config = load_config(None, ["model.img_size=32", *readout])
    model, _ = prepare_model(config, store, DistInfo(), torch.device("cpu"))
    start = getattr(model.readout, "bias", None)
    if start is None or start.shape != expected.shape:
        start = model.readout.embedding.mean
    np.testing.assert_allclose(start.detach().numpy(), expected, rtol=1e-5, atol=1e-6)
