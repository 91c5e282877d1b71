"""Shared fixtures: a small synthetic dataset and its prepared store."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from brainencoder.data.synthetic import SyntheticConfig, make_synthetic

# the smallest useful training run (overrides of the default config): tests of plumbing
FAST_TRAIN = [
    "model.img_size=32",
    "model.readout.hidden_dim=16",
    "model.readout.latent_dim=8",
    "epochs=2",
    "batch_size=32",
    "cache_features=true",
]

# the one-epoch variant with the smallest readout: tests of files and failures, not of learning
TINY_TRAIN = [
    "model.img_size=32",
    "model.readout.hidden_dim=8",
    "model.readout.latent_dim=4",
    "epochs=1",
    "batch_size=32",
    "cache_features=true",
]


def train_cli(args, store, out):
    """``-m brainencoder train`` arguments for a subprocess (no config file)."""
    store_args = ["--store", str(store.path), "--out", str(out)]
    return ["-m", "brainencoder", "train", "none", *args, *store_args]


# two local processes under torchrun (gloo on CPU), as the DDP tests launch them
TORCHRUN_2 = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]

SMALL = SyntheticConfig(n_subjects=3, n_train=80, n_test=12, n_vertices=150, image_size=48, seed=0)


@pytest.fixture(autouse=True)
def _quiet_env(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NILEARN_DATA", str(tmp_path_factory.getbasetemp() / "nilearn_data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A small synthetic dataset (read-only: copy it before breaking it)."""
    os.environ.setdefault("NILEARN_DATA", str(tmp_path_factory.getbasetemp() / "nilearn_data"))
    return make_synthetic(tmp_path_factory.mktemp("synth") / "data", SMALL)


@pytest.fixture(scope="session")
def store(synth_root, tmp_path_factory):
    """The prepared store of ``synth_root`` at 32 px."""
    from brainencoder.data.prepare import PrepareOptions, prepare_store

    return prepare_store(
        synth_root,
        tmp_path_factory.mktemp("store") / "store",
        PrepareOptions(image_size=32),
        workers=2,
        progress=False,
    )
