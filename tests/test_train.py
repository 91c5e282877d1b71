import itertools
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from brainencoder.models.modelfile import load_encoder
from brainencoder.runs.run import Run
from brainencoder.training.config import load_config, parse_overrides
from brainencoder.training.loop import lr_at, train
from brainencoder.util.errors import CheckpointError, ConfigError
from conftest import TORCHRUN_2, train_cli

FAST = [
    "model.img_size=32",
    "model.readout.hidden_dim=16",
    "model.readout.latent_dim=8",
    "epochs=2",
    "batch_size=32",
    "lr=3e-3",
    "weight_decay=0.01",
    "log_every=1",
]


def _config(*extra):
    return load_config(None, [*FAST, *extra])


def test_config_layers_and_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 3\nlr: 1\nmodel: {readout: {dropout: 0.2}}\n")
    cfg = load_config(path, ["lr=0.5", "model.readout.hidden_dim=8", "crop_scale=[0.5, 1]"])
    assert cfg.epochs == 3 and cfg.lr == 0.5 and isinstance(cfg.lr, float)
    assert cfg.model == {"readout": {"dropout": 0.2, "hidden_dim": 8}}
    assert cfg.crop_scale == [0.5, 1.0]
    assert cfg.encoder_config().readout["hidden_dim"] == 8
    assert parse_overrides(["a.b.c=[1, 2]"]) == {"a": {"b": {"c": [1, 2]}}}
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['lrr'\]; valid"):
        load_config(None, ["lrr=1"])
    with pytest.raises(ConfigError, match="'epochs' must be int; got 'many'"):
        load_config(None, ["epochs=many"])
    with pytest.raises(ConfigError, match="'batch_size' must be >= 1"):
        load_config(None, ["batch_size=0"])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['model.depth'\]"):
        load_config(None, ["model.depth=3"])
    with pytest.raises(ConfigError, match="'model.readout.hidden_dim' must be int; got 'abc'"):
        load_config(None, ["model.readout.hidden_dim=abc"])
    with pytest.raises(ConfigError, match="'model.img_size' must be int or None; got 'x'"):
        load_config(None, ["model.img_size=x"])
    for bad, match in [
        ("lr=.nan", "'lr' must be a finite number"),
        ("weight_decay=-1", "'weight_decay' must be >= 0"),
        ("grad_clip=0", "'grad_clip' must be > 0 or null"),
        ("seed=-3", r"'seed' must be in \[0, 4294967295\]"),
        ("early_stop_patience=0", "'early_stop_patience' must be >= 1"),
        ("betas=[0.9, 1.5]", "'betas' must be two numbers in"),
        ("loss.name=l3", r"unknown loss 'l3'; available: \[.*'pearson', 'smooth_l1'"),
        ("loss.beta=0.1", r"unknown key\(s\) \['loss.beta'\]"),
        ("model.readout.dropout=1.5", "'dropout' must be in"),
    ]:
        with pytest.raises(ConfigError, match=match):
            load_config(None, [bad])
    smooth = load_config(None, ["loss.name=smooth_l1", "loss.beta=0.01"])
    assert smooth.loss == {"name": "smooth_l1", "beta": 0.01}
    with pytest.raises(ConfigError, match="does not decompose over samples"):
        load_config(None, ["loss.name=pearson", "grad_accum=2", "batch_size=8"])
    with pytest.raises(ConfigError, match="must look like key=value"):
        load_config(None, ["epochs"])
    with pytest.raises(ConfigError, match="'val_metric' must be val/"):
        load_config(None, ["val_metric=val/loss"])
    assert load_config(None, ["val_metric=val/subj02/pearson_median"]).val_metric
    with pytest.raises(ConfigError, match="'amp' must be one of"):
        load_config(None, ["amp=fp8"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    for name in ("phase1", "phase2", "demo", "demo_phase2"):
        load_config(Path(__file__).parents[1] / "configs" / f"{name}.yaml")


def test_seeds_and_micro_batches_are_refused_before_any_work(store, tmp_path, capsys):
    """A seed beyond what the random generators take, or a micro-batch of one sample
    (BatchNorm cannot train on it): one-line errors naming the key, no run folder."""
    from brainencoder.cli.main import main

    for bad in ("seed=18446744073709551616", "pca_seed=4294967296"):
        with pytest.raises(ConfigError, match=r"_?seed' must be .*\[0, 4294967295\]"):
            load_config(None, [bad])
    assert load_config(None, ["seed=4294967295"]).seed == 2**32 - 1
    with pytest.raises(ConfigError, match="1 sample per micro-batch; BatchNorm needs at least 2"):
        load_config(None, ["batch_size=2", "grad_accum=2"])
    with pytest.raises(ConfigError, match="raise batch_size to at least 8 or lower grad_accum"):
        load_config(None, ["batch_size=4", "grad_accum=4"])
    assert load_config(None, ["batch_size=4", "grad_accum=2"]).grad_accum == 2
    for bad in (["batch_size=2", "grad_accum=2"], ["seed=18446744073709551616"]):
        argv = ["train", "none", *bad, "--store", str(store.path), "--out", str(tmp_path / "r")]
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert not (tmp_path / "r").exists()


def test_lr_schedule_is_warmup_then_cosine_to_floor():
    lrs = [lr_at(s, 100, 1.0, 0.05, 0.05) for s in range(100)]
    assert lrs[0] == pytest.approx(0.2) and lrs[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[4:]))
    assert lrs[-1] == pytest.approx(0.05, abs=1e-3)


@pytest.mark.parametrize("cached", [True, False])
def test_train_learns_and_writes_run(store, tmp_path, cached):
    run = tmp_path / "run"
    cfg = _config(
        f"cache_features={str(cached).lower()}",
        "cache_views=2",
        f"cache_dir={tmp_path / 'cache'}",
        "epochs=4",
    )
    summary = train(cfg, store.path, run)
    assert summary["finished"] and summary["epochs_run"] == 4
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r["val/r2_median"] for r in records if "val/r2_median" in r]
    assert len(val) == 4 and val[-1] > val[0]
    # 8 val images per subject: R² is dominated by the val mean, Pearson shows the signal
    assert [r["val/pearson_median"] for r in records if "epoch" in r and "best" in r][-1] > 0.1
    for name in ("config.yaml", "best.safetensors", "best.json", "summary.json"):
        assert (run / name).exists()
    model = load_encoder(run / "best.safetensors")
    assert model.predict(np.asarray(store.images[:2]), "subj01")["lh"].shape[0] == 2
    with pytest.raises(CheckpointError, match="already holds a finished run; pass --overwrite"):
        train(cfg, store.path, run)
    with pytest.raises(CheckpointError, match="the run already finished"):
        train(cfg, store.path, run, resume=True)


def _weights(run):
    model = load_encoder(run / "best.safetensors")
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_is_bitwise_identical(store, tmp_path):
    cfg = _config(
        "cache_features=true",
        f"cache_dir={tmp_path / 'cache'}",
        "cache_views=2",
        "epochs=3",
        "model.readout.dropout=0.3",
    )
    train(cfg, store.path, tmp_path / "full")
    stopped = train(cfg, store.path, tmp_path / "part", stop_after_steps=7)  # mid-epoch 2
    assert stopped == {"stopped_at_step": 7}
    with pytest.raises(
        CheckpointError, match="holds an unfinished run; pass --overwrite .* or --resume"
    ):
        train(cfg, store.path, tmp_path / "part")
    train(cfg, store.path, tmp_path / "part", resume=True)
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _records(tmp_path / "full") == _records(tmp_path / "part")
    other = _config("cache_features=true", f"cache_dir={tmp_path / 'cache'}", "epochs=5")
    train(other, store.path, tmp_path / "p2", stop_after_steps=2)
    with pytest.raises(CheckpointError, match="made with another config"):
        train(_config("epochs=5"), store.path, tmp_path / "p2", resume=True)


def test_phase2_from_phase1_and_freeze_errors(store, tmp_path):
    train(
        _config("cache_features=true", f"cache_dir={tmp_path / 'c'}"), store.path, tmp_path / "p1"
    )
    p2 = load_config(
        None,
        [
            "epochs=1",
            "batch_size=32",
            "lr=1e-4",
            "train_trunk=true",
            f"init_from={tmp_path / 'p1'}",
            "freeze=[conv1*, layer1*]",
        ],
    )
    summary = train(p2, store.path, tmp_path / "p2")
    assert summary["finished"]
    from brainencoder.runs.history import run_history

    history = run_history(tmp_path / "p2")  # phase 2's curves continue phase 1's
    assert [run.name for run, _ in history] == ["p1", "p2"]
    n_epochs = [sum("val/r2_median" in r for r in records) for _, records in history]
    assert n_epochs == [_config().epochs, 1]
    before = load_encoder(tmp_path / "p1" / "best.safetensors").state_dict()
    after = load_encoder(tmp_path / "p2" / "best.safetensors").state_dict()
    assert torch.equal(before["trunk.model.conv1.weight"], after["trunk.model.conv1.weight"])
    assert not torch.equal(
        before["trunk.model.layer3.0.conv1.weight"], after["trunk.model.layer3.0.conv1.weight"]
    )
    bad = load_config(
        None,
        [
            "epochs=1",
            "batch_size=32",
            "train_trunk=true",
            f"init_from={tmp_path / 'p1'}",
            'freeze=["fc_norm\'*"]',
        ],
    )
    with pytest.raises(ConfigError, match='freeze pattern "fc_norm\'\\*" matches no parameter'):
        train(bad, store.path, tmp_path / "p3")


def _records(run):
    """metrics.jsonl without its timings (which differ between any two runs)."""
    timings = ("samples_per_s", "epoch_seconds", "data_wait_seconds")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in timings} for x in lines]


# phase 2 (trunk trained from cropped images) of the smallest model, with dropout
PHASE2 = ["train_trunk=true", "freeze=[conv1*, layer1*]", "crop_scale=[0.5, 1]"]


@pytest.mark.numerics
@pytest.mark.parametrize("phase", ["phase2", "cached"])
def test_prefetch_workers_give_the_serial_weights(store, tmp_path, phase):
    """Batches read and cropped ahead in 2 threads: the same steps as num_workers=0."""
    if phase == "phase2":  # 2 micro-batches a step: crops seeded per micro-batch
        args = [*PHASE2, "grad_accum=2"]
    else:
        args = ["cache_features=true", "cache_views=2", f"cache_dir={tmp_path / 'cache'}"]
    for workers in (0, 2):
        train(_config(*args, f"num_workers={workers}"), store.path, tmp_path / f"w{workers}")
    a, b = _weights(tmp_path / "w0"), _weights(tmp_path / "w2")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _records(tmp_path / "w0") == _records(tmp_path / "w2")  # every step's loss
    records = _records(tmp_path / "w2")
    assert len(records) == 2 + sum("train/loss" in r for r in records)


@pytest.mark.parametrize(("sig", "workers"), [(signal.SIGTERM, 2), (signal.SIGINT, 0)])
def test_signal_saves_a_checkpoint_and_resume_matches(store, tmp_path, monkeypatch, sig, workers):
    """SIGTERM / SIGINT mid-epoch: a checkpoint after the current step, then an exact resume."""
    from brainencoder.runs.run import Run
    from brainencoder.training.step import TrainStep

    cfg = _config(*PHASE2, "epochs=1", f"num_workers={workers}")
    train(cfg, store.path, tmp_path / "full")
    run_step = TrainStep.run

    def run_then_signal(self, batch):
        loss = run_step(self, batch)
        if batch.step == 2:  # the third of 6 steps
            signal.raise_signal(sig)
        return loss

    monkeypatch.setattr(TrainStep, "run", run_then_signal)
    before = signal.getsignal(sig)
    with pytest.raises(KeyboardInterrupt, match="saved a checkpoint in .*continue with --resume"):
        train(cfg, store.path, tmp_path / "part")
    assert signal.getsignal(sig) is before  # the loop's handler is gone again
    monkeypatch.undo()
    state = json.loads((Run(tmp_path / "part").latest_checkpoint() / "state.json").read_text())
    assert (state["epoch"], state["batch_in_epoch"], state["step"]) == (0, 3, 3)
    train(cfg, store.path, tmp_path / "part", resume=True)
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _records(tmp_path / "full") == _records(tmp_path / "part")


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches(store, tmp_path):
    """SIGKILL a training subprocess at seeded random moments after each new checkpoint,
    resume every time, and compare with an uninterrupted run."""
    args = [
        *FAST,
        "epochs=30",
        "checkpoint_every=3",
        "cache_features=true",
        f"cache_dir={tmp_path / 'cache'}",
        "model.readout.dropout=0.3",
    ]
    train(load_config(None, args), store.path, tmp_path / "full")
    run = tmp_path / "killed"
    pointer = run / "checkpoints" / "latest.json"
    cmd = [sys.executable, *train_cli(args, store, run)]
    # Ctrl-C first: a checkpoint at the current step, exit status 130
    proc = subprocess.Popen(
        [*cmd, "--overwrite"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    while not pointer.exists() and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "continue with --resume" in err
    rng = np.random.default_rng(1)
    kills = resumes = 0
    while not (run / "summary.json").exists():
        resumes += pointer.exists()
        proc = subprocess.Popen(
            [*cmd, "--resume"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if kills < 3:
            before = pointer.read_text()
            deadline = time.time() + 120
            while proc.poll() is None and time.time() < deadline:
                if pointer.read_text() != before:
                    time.sleep(rng.uniform(0.0, 0.2))  # somewhere mid-epoch
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
                    break
                time.sleep(0.05)
        proc.wait(timeout=300)
        assert kills + resumes < 10
    assert kills == 3 and resumes >= 3
    a, b = _weights(tmp_path / "full"), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_torchrun_two_gloo_processes_match_single_process(store, tmp_path):
    args = [
        *FAST,
        "epochs=2",
        "model.readout.dropout=0.0",
        "cache_features=true",
        "cache_views=2",
        f"cache_dir={tmp_path / 'cache'}",
        "grad_clip=null",
    ]
    train(load_config(None, args), store.path, tmp_path / "single")
    cmd = [
        *TORCHRUN_2,
        *train_cli([*args, f"cache_dir={tmp_path / 'cache2'}"], store, tmp_path / "ddp"),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):  # both ranks extract their share of the feature cache
        assert f"process {rank} of 2 extracts" in result.stderr, result.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2
    a, b = _weights(tmp_path / "single"), _weights(tmp_path / "ddp")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=2e-3, atol=2e-4, msg=key)
    lines = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len((tmp_path / "single" / "metrics.jsonl").read_text().splitlines())


@pytest.mark.numerics
def test_early_stopping_and_grad_accumulation(store, tmp_path):
    cache = f"cache_dir={tmp_path / 'cache'}"
    # lr so small nothing improves after the first epoch: patience 1 stops at epoch 2
    cfg = _config("epochs=10", "lr=1e-9", "early_stop_patience=1", "cache_features=true", cache)
    summary = train(cfg, store.path, tmp_path / "early")
    assert summary["stopped_early"] and summary["epochs_run"] < 10
    # gradient accumulation: 2 micro-batches per step give the batch-32 steps (no BatchNorm,
    # whose statistics would be per micro-batch, and no dropout)
    base = ["epochs=2", "model.readout.dropout=0.0", "model.readout.norm=false"]
    base += ["cache_features=true", cache, "grad_clip=null"]
    one = train(_config(*base), store.path, tmp_path / "one")
    two = train(_config(*base, "grad_accum=2"), store.path, tmp_path / "two")
    assert two["steps"] == one["steps"] > 0
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for key in a:
        # Two micro-batch means summed differ from one batch mean by float32 rounding
        # (~1e-7 relative), and Adam's division by sqrt(v) can magnify that for a tiny
        # gradient. Measured on an AMD EPYC and with ATEN_CPU_CAPABILITY=default: 1.9e-6 on
        # weights up to 0.076 (2.5e-5 of the largest). A wrong accumulation (a missed
        # micro-batch, a wrong scale) changes whole Adam steps (~lr = 6e-4 each), so the
        # tolerance is 1e-3 of the tensor's largest value: 40x the rounding, under one step.
        scale = float(a[key].abs().max())
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-3 * scale + 1e-9, msg=key)


@pytest.mark.parametrize(
    "loss", [["loss.name=mse"], ["loss.name=smooth_l1", "loss.beta=0.5"], ["loss.name=pearson"]]
)
def test_each_loss_trains_the_encoder(store, tmp_path, loss):
    cache = f"cache_dir={tmp_path / 'cache'}"
    cfg = _config("epochs=4", "cache_features=true", cache, "lr=3e-3", *loss)
    summary = train(cfg, store.path, tmp_path / "run")
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    val = [r["val/pearson_median"] for r in records if "val/pearson_median" in r]
    assert summary["finished"] and val[-1] > max(0.1, val[0] + 0.02), val


def test_bf16_autocast_on_cpu_and_fp16_refused(store, tmp_path):
    """amp=bf16 on CPU: the training forward passes really run in bfloat16."""
    seen = set()

    def record(module, args, output):  # every module of every forward pass
        if module.training and isinstance(output, torch.Tensor) and output.is_floating_point():
            seen.add(output.dtype)

    cache = f"cache_dir={tmp_path / 'cache'}"
    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        summary = train(
            _config("epochs=1", "amp=bf16", "cache_features=true", cache),
            store.path,
            tmp_path / "bf16",
        )
    finally:
        hook.remove()
    assert summary["finished"] and np.isfinite(summary["val/r2_median"])
    assert torch.bfloat16 in seen, f"no training activation was bfloat16: {seen}"
    seen.clear()
    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        train(
            _config("epochs=1", "amp=none", "cache_features=true", cache),
            store.path,
            tmp_path / "f32",
        )
    finally:
        hook.remove()
    assert seen == {torch.float32}  # the hook sees the training passes, and amp=none is float32
    with pytest.raises(ConfigError, match="amp 'fp16' needs a CUDA device"):
        train(_config("epochs=1", "amp=fp16", "device=cpu"), store.path, tmp_path / "fp16")


def test_a_checkpoint_from_before_a_new_config_key_resumes(store, tmp_path):
    """Keys added to the config since a checkpoint was saved count as their defaults."""
    cfg = _config(f"cache_dir={tmp_path / 'cache'}")
    assert train(cfg, store.path, tmp_path / "run", stop_after_steps=1) == {"stopped_at_step": 1}
    run = Run(tmp_path / "run")
    state_file = run.latest_checkpoint() / "state.json"
    state = json.loads(state_file.read_text())
    del state["config"]["plugins"]  # as written before 'plugins' existed
    state_file.write_text(json.dumps(state))
    assert train(cfg, store.path, tmp_path / "run", resume=True)["finished"]
    train(cfg, store.path, tmp_path / "run2", stop_after_steps=1)
    state["config"]["lr"] = 0.5  # a real difference is still refused
    (Run(tmp_path / "run2").latest_checkpoint() / "state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="made with another config"):
        train(cfg, store.path, tmp_path / "run2", resume=True)
