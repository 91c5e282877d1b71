"""The readout contract: what a readout defines, what the base gives it, how callers use it.

A readout's constructor builds its shared part; :func:`create_readout` then
adds the subjects with the public ``add_subject``. Every other hook
(``initialize``, ``no_weight_decay``, ``regularizer``, the adaptation hooks)
has a default in :class:`Readout` that callers call directly. An optional
stage that is off is ``None``: ``point`` without its optional stages has no
zero-size parameter, and model files written when it had them still load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from brainencoder.cli.main import main
from brainencoder.models.encoder import create_encoder
from brainencoder.models.modelfile import load_encoder, read_model_file, save_encoder
from brainencoder.models.readouts import READOUTS, Readout, create_readout, register_readout
from brainencoder.models.readouts.subject_layers import apply_per_subject
from brainencoder.training.step import param_groups
from brainencoder.util.errors import CheckpointError, ConfigError
from conftest import TINY_TRAIN

SHAPES = [(3, 4, 4), (5, 2, 2)]
OPTIONAL = ("surround_weight", "output_gain", "shared_out")


@dataclass
class _PoolOptions:
    scale: float = 1.0


class _PoolReadout(Readout):
    """The documented contract and nothing more: constructor, subject module, forward."""

    def __init__(self, feature_shapes, n_vertices, options):
        super().__init__(feature_shapes, n_vertices, options)
        self.n_channels = sum(s[0] for s in self.feature_shapes)  # used by the subjects

    def make_subject_module(self):
        return nn.Linear(self.n_channels, self.n_vertices)

    def forward(self, features, subject):
        pooled = torch.cat([f.flatten(2).mean(2) for f in features], 1) * self.options.scale
        return apply_per_subject(pooled, subject, self.subject_modules())


class _HookedReadout(_PoolReadout):
    """Overrides the optional hooks; records the training mean it is started from."""

    def __init__(self, feature_shapes, n_vertices, options):
        super().__init__(feature_shapes, n_vertices, options)
        self.offset = nn.Parameter(torch.zeros(n_vertices))
        self.register_buffer("started_at", torch.zeros(n_vertices))

    def initialize(self, mean_response):
        with torch.no_grad():
            self.started_at.copy_(mean_response)
            self.offset.copy_(mean_response)

    def no_weight_decay(self):
        return {"offset"}

    def forward(self, features, subject):
        return super().forward(features, subject) + self.offset


@pytest.fixture
def registered():
    """The two contract readouts, registered for one test."""
    register_readout("contract_pool", _PoolOptions)(_PoolReadout)
    register_readout("contract_hooked", _PoolOptions)(_HookedReadout)
    try:
        yield
    finally:
        READOUTS.unregister("contract_pool")
        READOUTS.unregister("contract_hooked")


def _features(batch: int = 4) -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [torch.randn(batch, *s) for s in SHAPES]


def test_the_base_adds_the_subjects_and_declares_every_hook(registered):
    readout = create_readout("contract_pool", SHAPES, ["subj02", "subj01"], 7, scale=2.0)
    assert readout.subjects == ["subj02", "subj01"]  # in the given order: subject indices
    assert list(readout.per_subject) == ["subj02", "subj01"]
    assert readout.per_subject["subj01"].in_features == 8  # built after the constructor
    out = readout(_features(), torch.tensor([0, 1, 1, 0]))
    assert out.shape == (4, 7)
    # the defaults: no start from the data, nothing exempt from decay, no penalty
    before = {k: v.clone() for k, v in readout.state_dict().items()}
    readout.initialize(torch.ones(7))
    assert all(torch.equal(before[k], v) for k, v in readout.state_dict().items())
    assert readout.no_weight_decay() == set()
    assert float(readout.regularizer()) == 0.0
    assert (
        readout.finish_adaptation(
            "subj01", _features(), torch.zeros(4, 0), torch.zeros(0, dtype=torch.long), [1.0]
        )
        == 0
    )
    assert readout.new_vertex_value("anything", torch.zeros(3)) is None
    decayed = [g for g in param_groups(readout, 0.1, True) if g["weight_decay"] > 0]
    assert sum(p.numel() for g in decayed for p in g["params"]) == sum(
        p.numel() for p in readout.parameters()
    )
    # subjects come and go by the same public calls afterwards
    readout.add_subject("subj03", like=["subj01", "subj02"])
    assert readout.subjects == ["subj02", "subj01", "subj03"]
    with pytest.raises(ConfigError, match="duplicate subject names"):
        create_readout("contract_pool", SHAPES, ["subj01", "subj01"], 7)
    with pytest.raises(ConfigError, match="subject name '../x' is not valid"):
        create_readout("contract_pool", SHAPES, ["../x"], 7)


def test_a_readout_constructed_directly_has_no_subjects_until_added():
    readout = _PoolReadout(SHAPES, 5, _PoolOptions())
    assert readout.subjects == [] and len(readout.per_subject) == 0
    readout.add_subject("subj01")
    assert readout(_features(2), torch.zeros(2, dtype=torch.long)).shape == (2, 5)


def test_overridden_hooks_are_called_by_training(registered, store, tmp_path, capsys):
    """Training starts the readout at the training mean and leaves its exemptions undecayed."""
    from brainencoder.models.pca import training_mean

    readout = create_readout("contract_hooked", SHAPES, ["subj01"], 5)
    exempt = [g for g in param_groups(readout, 0.1, True) if g["weight_decay"] == 0.0]
    assert [p for g in exempt for p in g["params"]] == [readout.offset]
    out = tmp_path / "run"
    train = [a for a in TINY_TRAIN if not a.startswith("model.readout.")]
    train.append("model.readout.name=contract_hooked")
    argv = ["train", "none", *train, "--store", str(store.path), "--out", str(out)]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["finished"]
    model = load_encoder(out / "best.safetensors")
    np.testing.assert_allclose(model.readout.started_at.numpy(), training_mean(store), rtol=1e-6)


def _point(**options):
    return create_readout("point", SHAPES, ["subj01", "subj02"], 6, channels=4, **options)


def test_point_without_optional_stages_has_no_zero_size_tensor():
    plain = _point()
    for name in (*OPTIONAL, "shared_in"):
        assert getattr(plain, name) is None, name
    assert all(v.numel() for v in plain.state_dict().values())
    assert not set(plain.vertex_axes) & set(OPTIONAL)
    full = _point(surround=True, output="softplus", shared_rank=2)
    assert set(OPTIONAL) <= set(full.vertex_axes)
    assert all(v.numel() for v in full.state_dict().values())
    # adapt grows exactly the tensors there are, and trains only those
    for readout in (plain, full):
        readout.extend_vertices(torch.arange(6) * 2, torch.arange(6) * 2 + 1)
        assert readout.n_vertices == 12
        readout.add_subject("subj03")
        for name, axis in readout.vertex_axes.items():
            assert getattr(readout, name).shape[axis] == 12, name
        trained = readout.adapt_parameters("subj03", torch.arange(6) * 2 + 1)
        assert all(p.numel() for p, _ in trained)
        assert readout(_features(2), torch.tensor([0, 2])).shape == (2, 12)


def _old_style_file(new: str, old: str, extra: dict[str, torch.Tensor]) -> None:
    """``new`` as files were written when point's absent stages were zero-size tensors."""
    with safe_open(new, framework="pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        meta = fh.metadata()
    save_file({**tensors, **extra}, old, metadata=meta)


@pytest.mark.parametrize("with_surround", [False, True])
def test_old_model_files_with_zero_size_stages_load_and_predict_the_same(
    store, tmp_path, with_surround
):
    readout = {"name": "point", "channels": 4, "surround": with_surround}
    enc = create_encoder("tiny", store.space, img_size=32, readout=readout)
    new, old = tmp_path / "new.safetensors", tmp_path / "old.safetensors"
    save_encoder(enc, new)
    n_layers = len(enc.feature_shapes)
    legacy = {
        "model.readout.output_gain": torch.zeros(0),
        "model.readout.shared_out": torch.zeros(0, 0),
    }
    if not with_surround:
        legacy["model.readout.surround_weight"] = torch.zeros(n_layers, 0)
    _old_style_file(str(new), str(old), legacy)
    back = load_encoder(old)
    assert all(v.numel() for v in back.state_dict().values())
    images = np.asarray(store.images[:3])
    for subject in ("subj01", "subj02"):
        a, b = enc.eval().predict(images, subject), back.predict(images, subject)
        for hemi in ("lh", "rh"):
            np.testing.assert_array_equal(a[hemi], b[hemi])
    tensors, _ = read_model_file(old)  # what resuming and init_from read
    assert not set(legacy) & set(tensors)
    # the file saved again is the current format: no zero-size tensor
    save_encoder(back, tmp_path / "again.safetensors")
    with safe_open(str(tmp_path / "again.safetensors"), framework="pt") as fh:
        assert all(0 not in fh.get_slice(k).get_shape() for k in fh.keys())


def test_a_real_optional_stage_the_model_lacks_is_still_refused(store, tmp_path):
    """Only zero-size stages are dropped: a file with a surround the header lacks is damaged."""
    enc = create_encoder("tiny", store.space, img_size=32, readout={"name": "point", "channels": 4})
    new, bad = tmp_path / "new.safetensors", tmp_path / "bad.safetensors"
    save_encoder(enc, new)
    weight = torch.ones(len(enc.feature_shapes), store.space.n_vertices)
    _old_style_file(str(new), str(bad), {"model.readout.surround_weight": weight})
    with pytest.raises(CheckpointError, match=r"unexpected \['readout.surround_weight'\]"):
        load_encoder(bad)
