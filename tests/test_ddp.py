"""DDP as the README describes it: every BatchNorm of the head synchronized, --resume, cache_scope.

The tests that launch processes run two local gloo processes under torchrun
(:data:`conftest.TORCHRUN_2`); the rest check the same code in one process.
"""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest
import torch
from torch import nn

from brainencoder.training.config import load_config
from brainencoder.training.distributed import DistInfo, SyncedBatchNorm, sync_batchnorms
from brainencoder.training.setup import prepare_model
from conftest import TINY_TRAIN, TORCHRUN_2

# a small `point` readout on the tiny encoder (its BatchNorm is a BatchNorm2d)
POINT = [
    "model.img_size=32",
    "model.readout.name=point",
    "model.readout.channels=8",
    "model.readout.dropout=0.0",
]


def _batchnorms(module: nn.Module) -> dict[str, nn.Module]:
    return {
        n: m for n, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    }


def test_every_batchnorm_of_the_head_is_synchronized_under_ddp(store):
    """prepare_model under DDP replaces each BatchNorm of the readout, 1d and 2d alike."""
    for readout in (POINT, ["model.img_size=32", "model.readout.latent_dim=4"]):
        config = load_config(None, readout)
        plain, _ = prepare_model(config, store, DistInfo(), torch.device("cpu"))
        synced, _ = prepare_model(config, store, DistInfo(0, 2, 0), torch.device("cpu"))
        before, after = _batchnorms(plain.readout), _batchnorms(synced.readout)
        assert before and set(before) == set(after)
        assert {type(m) for m in before.values()} & {nn.BatchNorm1d, nn.BatchNorm2d}
        assert all(type(m) is SyncedBatchNorm for m in after.values()), after


def test_sync_batchnorms_keeps_weights_statistics_and_can_use_torchs_layer():
    model = nn.Sequential(nn.BatchNorm1d(4), nn.Sequential(nn.BatchNorm2d(3)), nn.BatchNorm3d(2))
    with torch.no_grad():
        model[1][0].running_mean.fill_(0.5)
        model[1][0].weight.fill_(2.0)
    model.eval()
    x = torch.randn(5, 3, 4, 4)
    expected = model[1][0](x)
    sync_batchnorms(model)
    assert [type(m) for m in _batchnorms(model).values()] == [SyncedBatchNorm] * 3
    assert not model[1][0].training
    torch.testing.assert_close(model[1][0](x), expected, rtol=0, atol=0)
    native = sync_batchnorms(nn.Sequential(nn.BatchNorm2d(3), nn.BatchNorm1d(2)), native=True)
    assert [type(m) for m in native] == [nn.SyncBatchNorm] * 2


_BN_SCRIPT = """
import sys
import torch
from brainencoder.data.store import Store
from brainencoder.training.config import load_config
from brainencoder.training.distributed import init_distributed
from brainencoder.training.setup import prepare_model

store, out, overrides = Store(sys.argv[1]), sys.argv[2], sys.argv[3:]
info = init_distributed("cpu")
model, _ = prepare_model(load_config(None, overrides), store, info, torch.device("cpu"))
gen = torch.Generator().manual_seed(100 + info.rank)  # each rank its own images
for _ in range(2):
    images = torch.rand(4, 3, 32, 32, generator=gen)
    model(images, torch.tensor([0, 1, 2, 0])).square().mean().backward()
state = {k: v for k, v in model.readout.state_dict().items() if "running" in k}
torch.save(state, f"{out}/rank{info.rank}.pt")
"""


@pytest.mark.slow
def test_two_ranks_end_with_equal_point_batchnorm_statistics(store, tmp_path):
    """Two gloo processes, each with other images: the point readout's BatchNorm2d
    statistics are equal on both ranks and equal those of one process on all images."""
    script = tmp_path / "bn.py"
    script.write_text(textwrap.dedent(_BN_SCRIPT))
    cmd = [*TORCHRUN_2, str(script), str(store.path), str(tmp_path), *POINT]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert len(ranks[0]) == 6, list(ranks[0])  # running mean and variance of 3 layers
    # one process, both ranks' images in each step
    model, _ = prepare_model(load_config(None, POINT), store, DistInfo(), torch.device("cpu"))
    gens = [torch.Generator().manual_seed(100 + r) for r in (0, 1)]
    for _ in range(2):
        images = torch.cat([torch.rand(4, 3, 32, 32, generator=g) for g in gens])
        model(images, torch.tensor([0, 1, 2, 0] * 2))
    single = model.readout.state_dict()
    for key, value in ranks[0].items():
        torch.testing.assert_close(ranks[1][key], value, rtol=0, atol=0, msg=key)
        # the same sums in another order (float32): 1e-5 relative is 100x the rounding
        torch.testing.assert_close(value, single[key], rtol=1e-5, atol=1e-6, msg=key)


_NODE_SCRIPT = """
import json, logging, os, sys
from pathlib import Path

logging.basicConfig(level=logging.INFO)

# each process plays a node of its own: its local rank 0 of 1, its own cache folder
# (cache_dir is relative, and every "node" has its own working directory)
node = Path(sys.argv[1]) / f"node{os.environ['RANK']}"
node.mkdir(parents=True, exist_ok=True)
os.chdir(node)
os.environ["LOCAL_RANK"], os.environ["LOCAL_WORLD_SIZE"] = "0", "1"
from brainencoder.training.config import load_config
from brainencoder.training.loop import train

job = json.loads(sys.argv[2])
train(load_config(None, job["overrides"]), job["store"], job["out"], resume=job["resume"],
      stop_after_steps=job["stop"])
"""


def _torchrun_train(script, nodes, store, out, overrides, resume=False, stop=None):
    job = {"overrides": overrides, "store": str(store.path), "out": str(out)}
    job.update(resume=resume, stop=stop)
    cmd = [*TORCHRUN_2, str(script), str(nodes), json.dumps(job)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def _weights(run):
    from safetensors.torch import load_file

    return load_file(str(run / "best.safetensors"))


@pytest.mark.slow
def test_ddp_resume_and_a_cache_per_node(store, tmp_path):
    """``--resume`` under torchrun continues a 2-process run exactly (gloo: the same sums
    in the same order), and ``cache_scope: node`` makes every node extract the whole
    cache into its own folder, byte-identical to one process's."""
    from brainencoder.inference.cache import FeatureCache

    script = tmp_path / "node.py"
    script.write_text(textwrap.dedent(_NODE_SCRIPT))
    overrides = [
        *TINY_TRAIN,
        "epochs=2",
        "log_every=1",
        "cache_scope=node",
        "cache_dir=cache",
        # exact only without dropout: a checkpoint holds rank 0's random state, so after a
        # resume the other ranks draw other dropout masks (the README says so)
        "model.readout.dropout=0.0",
    ]
    full, part = tmp_path / "full", tmp_path / "part"
    _torchrun_train(script, tmp_path / "a", store, full, overrides)
    steps = json.loads((full / "summary.json").read_text())["steps"]
    assert steps >= 4 and json.loads((full / "summary.json").read_text())["world_size"] == 2
    # both "nodes" extracted every chunk into their own folder (an incomplete cache,
    # as a share of the chunks would leave, does not open)
    caches = [next((tmp_path / "a" / f"node{r}" / "cache").iterdir()) for r in (0, 1)]
    for a, b in zip(FeatureCache(caches[0]).layers, FeatureCache(caches[1]).layers, strict=True):
        assert a.tobytes() == b.tobytes()

    _torchrun_train(script, tmp_path / "b", store, part, overrides, stop=steps // 2 + 1)
    assert not (part / "summary.json").exists()
    assert json.loads((part / "checkpoints" / "latest.json").read_text())
    err = _torchrun_train(script, tmp_path / "b", store, part, overrides, resume=True)
    # only rank 0 logs and writes: both ranks ran with INFO logging, one line came out
    assert err.count("resuming at epoch") == 1
    assert err.count("epoch 2: val/r2_median") == 1
    summary = json.loads((part / "summary.json").read_text())
    assert summary["steps"] == steps and summary["world_size"] == 2
    a, b = _weights(full), _weights(part)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # the resumed run's log continues the interrupted one: every step logged once
    logged = [json.loads(x) for x in (part / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in logged if "train/loss" in r]
    assert sorted(set(train_steps)) == list(range(1, steps + 1))
    # ... and once only in the uninterrupted run's (rank 1 appends nothing)
    logged = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    assert sorted(r["step"] for r in logged if "train/loss" in r) == list(range(1, steps + 1))
    # no file of a rank other than 0 in either run folder
    assert not [p for run in (full, part) for p in run.rglob("*rank1*")]
