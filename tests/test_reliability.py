"""Interrupted feature caching, disk checks, mismatched subjects."""

import collections
import re
import shutil

import numpy as np
import pytest

from brainencoder.data.prepare import PrepareOptions, prepare_store
from brainencoder.data.store import Store
from brainencoder.inference.cache import CacheSpec, FeatureCache, build_feature_cache
from brainencoder.models.encoder import create_encoder
from brainencoder.training.config import load_config
from brainencoder.training.loop import train
from brainencoder.util.errors import BrainEncoderError, ConfigError
from conftest import TINY_TRAIN

TINY = {"img_size": 32, "readout": {"hidden_dim": 8, "latent_dim": 4}}


def _fast_run(store, tmp_path):
    """Train a minimal encoder into tmp_path/run; returns its config overrides."""
    fast = [*TINY_TRAIN, f"cache_dir={tmp_path / 'cache'}"]
    train(load_config(None, fast), store.path, tmp_path / "run")
    return fast


def _model(store):
    import torch

    torch.manual_seed(0)
    return create_encoder("tiny", store.space, **TINY)


def test_feature_cache_resumes_after_interruption(store, tmp_path):
    rows = np.arange(store.images.shape[0])
    full = build_feature_cache(_model(store), store, rows, CacheSpec(2), root=tmp_path / "a")
    part = build_feature_cache(_model(store), store, rows, CacheSpec(2), root=tmp_path / "b")
    # simulate a kill: manifest gone, one chunk unmarked and overwritten with garbage
    (part.path / "manifest.json").unlink()
    (part.path / "chunks").mkdir()
    for view in range(2):
        for start in range(0, rows.size, 64):
            if (view, start) != (1, 64):
                (part.path / "chunks" / f"{view}-{start:08d}.done").touch()
    layer = np.memmap(
        part.path / "layer0.f16", dtype=np.float16, mode="r+", shape=full.layers[0].shape
    )
    layer[1, 64:128] = 7
    layer.flush()
    del layer
    with pytest.raises(BrainEncoderError, match="feature cache is incomplete"):
        FeatureCache(part.path)
    model = _model(store)
    forward, calls = model.forward_features, []
    model.forward_features = lambda x: (calls.append(len(x)), forward(x))[1]
    resumed = build_feature_cache(model, store, rows, CacheSpec(2), root=tmp_path / "b")
    assert calls == [64]  # only the unmarked chunk was extracted again
    for a, b in zip(full.layers, resumed.layers):
        np.testing.assert_array_equal(a, b)


def test_feature_cache_checks_disk_space(store, tmp_path, monkeypatch):
    import brainencoder.util.fileio as fileio

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda p: usage(10**9, 10**9, 100))
    with pytest.raises(BrainEncoderError, match="not enough disk space for the feature cache"):
        build_feature_cache(_model(store), store, np.arange(10), root=tmp_path / "c")


def test_mismatched_subjects_are_refused(store, synth_root, tmp_path):
    fast = _fast_run(store, tmp_path)
    two = shutil.copytree(synth_root, tmp_path / "two", ignore=shutil.ignore_patterns("truth"))
    shutil.rmtree(two / "subj01")
    shutil.rmtree(two / "subj02")  # only subj03 left, which misses some group vertices
    other = prepare_store(two, tmp_path / "store2", PrepareOptions(image_size=32))
    cfg = load_config(None, ["epochs=1", "batch_size=32", f"init_from={tmp_path / 'run'}"])
    with pytest.raises(
        ConfigError, match=r"vertex space \(subjects \['subj01', 'subj02', 'subj03'\]"
    ):
        train(cfg, other.path, tmp_path / "run2")
    from brainencoder.evaluation.evaluate import evaluate_run

    with pytest.raises(BrainEncoderError, match="is not the store .*other data, splits, vertex"):
        evaluate_run(tmp_path / "run", "val", Store(other.path))
    with pytest.raises(ConfigError, match=r"PCA of \d+ vertices, but the store's group space"):
        from brainencoder.models.pca import fit_group_pca

        fit_group_pca(store, 4).save(tmp_path / "pca.safetensors")
        train(
            load_config(None, [*fast, f"pca_file={tmp_path / 'pca.safetensors'}"]),
            other.path,
            tmp_path / "run3",
        )


def _kill_after(cmd, ready, rng, timeout=120):
    """Start ``cmd``, SIGKILL it soon after ``ready()`` turns true; True if it was killed."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if ready():
            time.sleep(rng.uniform(0, 0.05))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.01)
    proc.wait()
    return False


@pytest.mark.slow
def test_sigkill_feature_caching_then_resume(store, tmp_path):
    import sys

    rows = np.arange(store.images.shape[0])
    root = tmp_path / "killed"
    code = (
        "import numpy as np, torch; from brainencoder.data.store import Store; "
        "from brainencoder.inference.cache import CacheSpec, build_feature_cache; "
        "from brainencoder.models.encoder import create_encoder; "
        f"s = Store({str(store.path)!r}); torch.manual_seed(0); "
        f"m = create_encoder('tiny', s.space, **{TINY!r}); "
        f"build_feature_cache(m, s, np.arange(s.images.shape[0]), CacheSpec(3), root={str(root)!r})"
    )
    rng = np.random.default_rng(0)

    def some_chunks_done():
        return any(root.glob("*/chunks/*.done"))

    killed = sum(_kill_after([sys.executable, "-c", code], some_chunks_done, rng) for _ in range(2))
    assert killed >= 1
    assert not list(root.glob("*/manifest.json")) or killed < 2
    resumed = build_feature_cache(_model(store), store, rows, CacheSpec(3), root=root)
    full = build_feature_cache(_model(store), store, rows, CacheSpec(3), root=tmp_path / "full")
    for a, b in zip(full.layers, resumed.layers):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_sigkill_submit_leaves_no_partial_zip(store, synth_root, tmp_path):
    import sys

    from brainencoder.data.layout import read_layout
    from brainencoder.evaluation.submission import read_submission

    _fast_run(store, tmp_path)
    out = tmp_path / "sub.zip"
    # each zip member takes 0.1 s more to write, so the kill lands while the temporary
    # zip exists whatever the machine's speed (a small zip is otherwise written in ms)
    args = ["submit", str(tmp_path / "run"), "--data", str(synth_root), "--out", str(out)]
    slow_zip = (
        "import time, zipfile; write = zipfile.ZipFile.writestr; "
        "zipfile.ZipFile.writestr = lambda *a, **k: (time.sleep(0.1), write(*a, **k))[1]; "
        f"from brainencoder.cli.main import main; raise SystemExit(main({args!r}))"
    )
    cmd = [sys.executable, "-c", slow_zip]
    rng = np.random.default_rng(0)
    landed = 0
    for _ in range(6):  # kill while the zip is being written (its temporary file exists)
        if _kill_after(cmd, lambda: any(tmp_path.glob(".sub.zip.*")), rng):
            landed += 1
            if out.exists():  # the rename happened before the kill: complete and valid
                read_submission(out, read_layout(synth_root))
                out.unlink()
        if landed >= 2:
            break
    assert landed >= 1, "no kill landed while the submission was being written"
    assert not out.exists() or read_submission(out, read_layout(synth_root))


def test_truncated_or_edited_run_files_give_one_line_errors(store, tmp_path, capsys):
    from brainencoder.cli.main import main
    from brainencoder.runs.run import Run

    fast = _fast_run(store, tmp_path)
    run = tmp_path / "run"
    part = tmp_path / "part"
    cfg = load_config(None, [*fast, "epochs=3"])
    train(cfg, store.path, part, stop_after_steps=2)
    resume = ["train", "none", *fast, "epochs=3", "--store", str(store.path), "--out", str(part)]
    pointer = part / "checkpoints" / "latest.json"
    good = pointer.read_text()
    for text, match in [
        ('{"name": "step-00', "checkpoint pointer .* is not valid JSON"),
        ('{"name": "../../../etc"}', "damaged checkpoint pointer"),
    ]:
        pointer.write_text(text)
        assert main([*resume, "--resume"]) == 1
        assert re.search(match, capsys.readouterr().err)
    pointer.write_text(good)
    state = next((part / "checkpoints").glob("step-*")) / "state.json"
    state.write_text(state.read_text().replace('"numpy_rng"', '"numpy_rgn"'))
    assert main([*resume, "--resume"]) == 1
    assert "state.json: damaged checkpoint state" in capsys.readouterr().err
    config = run / "config.yaml"
    config.write_text(config.read_text()[:25] + "\n  - [unclosed")
    assert main(["evaluate", str(run), "--split", "val"]) == 1
    assert re.search(
        r"config.yaml: (invalid run config|damaged run header)", capsys.readouterr().err
    )
    (run / "summary.json").write_text('{"finished": tr')
    assert main(["report", str(run)]) == 1
    assert "run summary" in capsys.readouterr().err
    metrics = run / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"step": 99, "train/lo')  # cut by a kill
    records = Run(run).read_metrics()
    assert records and all(r.get("step") != 99 for r in records)
    pca = tmp_path / "pca.safetensors"
    from brainencoder.models.pca import fit_group_pca

    fit_group_pca(store, 4).save(pca)
    pca.write_bytes(pca.read_bytes()[:100])
    with pytest.raises(BrainEncoderError, match="not a readable group PCA file"):
        train(load_config(None, [*fast, f"pca_file={pca}"]), store.path, tmp_path / "r3")


def test_read_only_store_and_full_disk_give_clear_errors(store, tmp_path, monkeypatch, capsys):
    import errno
    from pathlib import Path

    from brainencoder.cli.main import main

    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if str(self).startswith(str(store.path)):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(BrainEncoderError, match="may be read-only: set cache_dir="):
        build_feature_cache(_model(store), store, np.arange(4))
    monkeypatch.setattr(Path, "mkdir", real_mkdir)

    import brainencoder.util.fileio as fileio

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(fileio.os, "replace", lambda a, b: full(b, None))
    argv = ["synth", str(tmp_path / "synth"), "--n-train", "60", "--n-test", "4"]
    assert main([*argv, "--vertices", "20", "--image-size", "32"]) == 1
    err = capsys.readouterr().err
    assert "the disk is full; free some space" in err and "Traceback" not in err
    assert not list(tmp_path.rglob("*.tmp*")), "a temporary file was left behind"


@pytest.mark.slow
def test_sigterm_to_prepare_ends_its_workers(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from brainencoder.data.synthetic import SyntheticConfig, make_synthetic

    data = make_synthetic(
        tmp_path / "data", SyntheticConfig(n_subjects=2, n_train=300, n_test=10, image_size=425)
    )
    cmd = [
        sys.executable,
        "-m",
        "brainencoder",
        "prepare",
        str(data),
        str(tmp_path / "s"),
        "--workers",
        "2",
        "--image-size",
        "128",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def children():
        out = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == proc.pid:
                out.append(int(stat.parent.name))
        return out

    deadline = time.time() + 60
    workers = []
    while time.time() < deadline and len(workers) < 2 and proc.poll() is None:
        workers = children()
        time.sleep(0.05)
    assert len(workers) >= 2, "the workers never started"
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "Traceback" not in err
    time.sleep(0.5)
    alive = [
        pid
        for pid in workers
        if Path(f"/proc/{pid}").exists() and " Z " not in Path(f"/proc/{pid}/stat").read_text()
    ]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"workers {alive} outlived prepare"


def test_saving_a_step_again_keeps_the_checkpoint_latest_names(store, tmp_path, monkeypatch):
    """A resumed run may save its starting step again; a kill then must not lose both."""
    import torch

    import brainencoder.runs.checkpoint as checkpoint
    from brainencoder.runs.run import Run

    model = _model(store)
    optimizer = torch.optim.AdamW(model.readout.parameters())
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    run = Run(tmp_path / "run")
    state = {"epoch": 1, "batch_in_epoch": 0, "step": 6}
    first = run.save_checkpoint(model, optimizer, scaler, dict(state))
    assert run.latest_checkpoint() == first

    def killed(*args, **kwargs):  # the process dies before the new folder is in place
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        run.save_checkpoint(model, optimizer, scaler, dict(state))
    assert run.latest_checkpoint() == first  # still complete and loadable
    monkeypatch.undo()
    second = run.save_checkpoint(model, optimizer, scaler, dict(state))
    assert second != first and run.latest_checkpoint() == second and not first.exists()


def test_full_disk_while_saving_a_model_or_pca_is_one_line(store, tmp_path, monkeypatch, capsys):
    """safetensors reports ENOSPC as a SafetensorError ("... (os error 28)"): train and pca
    say "PATH: the disk is full" in one line, as predict and submit do, and leave no file."""
    import safetensors.numpy
    import safetensors.torch
    from safetensors import SafetensorError

    from brainencoder.cli.main import main

    def full(*args, **kwargs):
        raise SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    monkeypatch.setattr(safetensors.numpy, "save_file", full)
    run = tmp_path / "run"
    argv = ["train", "none", *TINY_TRAIN, f"cache_dir={tmp_path / 'cache'}"]
    assert main([*argv, "--store", str(store.path), "--out", str(run)]) == 1
    err = capsys.readouterr().err
    assert re.search(
        rf"^error: {re.escape(str(run))}/\S+\.safetensors: the disk is full; ", err, re.M
    )
    assert "Traceback" not in err and "SafetensorError" not in err
    assert not list(run.rglob("*.safetensors")) and not list(run.rglob(".*.tmp*"))
    out = tmp_path / "pca.safetensors"
    assert main(["pca", str(store.path), "--out", str(out), "--components", "4"]) == 1
    err = capsys.readouterr().err
    assert err == f"error: {out}: the disk is full; free some space and run the command again " + (
        "(files are written atomically, so nothing half-written was left)\n"
    )
    assert list(tmp_path.glob("*pca*")) == []


def test_outputs_follow_the_umask(store, tmp_path):
    """Model files and the other atomic outputs get 0o666 less the umask, not mkstemp's
    0o600 (safetensors writes a temporary file of its own and renames it); the umask is
    read at each write."""
    import os
    import stat

    from brainencoder.models.pca import fit_group_pca

    old = os.umask(0o022)
    try:
        run = tmp_path / "run"
        train(load_config(None, [*TINY_TRAIN, f"cache_dir={tmp_path / 'c'}"]), store.path, run)
        for name in ("best.safetensors", "config.yaml", "summary.json"):
            assert stat.S_IMODE((run / name).stat().st_mode) == 0o644, name
        os.umask(0o027)
        fit_group_pca(store, 4).save(tmp_path / "pca.safetensors")
        assert stat.S_IMODE((tmp_path / "pca.safetensors").stat().st_mode) == 0o640
    finally:
        os.umask(old)
