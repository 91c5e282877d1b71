"""Readout registry, the grouplin equations, subject-keyed parameters."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from brainencoder.models.encoder import create_encoder
from brainencoder.models.modelfile import load_encoder, save_encoder
from brainencoder.models.readouts import Readout, create_readout, list_readouts, register_readout
from brainencoder.models.readouts.layers import LayerProjection
from brainencoder.util.errors import ConfigError

SHAPES = [(8, 3, 3), (8, 5)]  # a convnet map and a token sequence
SUBJECTS = ["subj01", "subj02", "subj03"]


def _grouplin(**options):
    torch.manual_seed(0)
    opts = {"hidden_dim": 6, "latent_dim": 4, "dropout": 0.0, **options}
    readout = create_readout("grouplin", SHAPES, SUBJECTS, 10, **opts)
    with torch.no_grad():
        for p in readout.parameters():
            p.normal_()
        readout.embedding.mean.normal_()
        for proj in readout.projections:
            proj.norm.running_mean.normal_()
            proj.norm.running_var.uniform_(0.5, 2)
    return readout.eval()


def test_grouplin_matches_the_original_equations():
    readout = _grouplin()
    feats = [torch.randn(5, *s) for s in SHAPES]
    subject = torch.tensor([2, 0, 1, 1, 0])
    hs = []
    for proj, x in zip(readout.projections, feats):
        x = x.flatten(2).transpose(1, 2)  # (B, T, C) as the original's Flatten
        y = torch.einsum("btc,kt,kc->bk", x, proj.proj.spatial, proj.proj.channel)
        bn = proj.norm
        hs.append((y - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias)
    h = torch.stack(hs).mean(0)
    comps, mean = readout.embedding.components, readout.embedding.mean
    expected = []
    for i, s in enumerate(subject.tolist()):
        lin = readout.per_subject[SUBJECTS[s]]
        shared = (h[i] @ readout.shared.weight.t()) @ comps + mean
        own = (h[i] @ lin.weight.t() + lin.bias) @ comps + mean
        expected.append(shared + own)  # both through the embedding, summed: mean twice
    with torch.no_grad():
        torch.testing.assert_close(readout(feats, subject), torch.stack(expected))
    assert readout.shared.bias is None and readout.projections[0].proj.spatial.shape == (6, 9)


def test_grouplin_dropout_acts_on_the_input_features():
    for where in ("input", "output"):
        proj = LayerProjection((8, 4), 6, 0.5, norm=True, dropout_on=where).train()
        x = torch.randn(7, 8, 4)
        torch.manual_seed(3)
        out = proj(x)
        torch.manual_seed(3)
        if where == "input":
            expected = proj.norm(proj.proj(nn.functional.dropout(x, 0.5)))
        else:
            expected = nn.functional.dropout(proj.norm(proj.proj(x)), 0.5)
        torch.testing.assert_close(out, expected)
    readout = create_readout("grouplin", SHAPES, SUBJECTS, 10, latent_dim=4, dropout=0.9)
    assert all(p.dropout_on == "input" for p in readout.projections)
    seq = create_readout("grouplin_seq", SHAPES, SUBJECTS, 10, latent_dim=4)
    assert all(p.dropout_on == "output" for p in seq.projections)


def test_parameter_counts_follow_the_architecture():
    k, lat, n_sub = 6, 4, 3
    proj = sum(k * (c + int(np.prod(rest))) + 2 * k for c, *rest in SHAPES)
    readout = create_readout("grouplin", SHAPES, SUBJECTS, 10, hidden_dim=k, latent_dim=lat)
    trainable = sum(p.numel() for p in readout.parameters() if p.requires_grad)
    assert trainable == proj + k * lat + n_sub * (k * lat + lat)  # shared K->L, subject K->L+b
    seq = create_readout("grouplin_seq", SHAPES, SUBJECTS, 10, hidden_dim=k, latent_dim=lat)
    trainable = sum(p.numel() for p in seq.parameters() if p.requires_grad)
    assert trainable == proj + k * lat + lat + n_sub * (lat * lat + lat)  # subject L->L


def test_subjects_are_keys_add_freeze_drop():
    readout = _grouplin()
    feats = [torch.randn(4, *s) for s in SHAPES]
    before = readout(feats, torch.tensor([0, 1, 2, 0])).detach()
    readout.add_subject("subj09", like="subj02")
    assert readout.subjects == [*SUBJECTS, "subj09"]
    with torch.no_grad():  # the copy predicts like its source; the others are unchanged
        torch.testing.assert_close(
            readout(feats, torch.tensor([3, 3, 3, 3])), readout(feats, torch.tensor([1] * 4))
        )
        torch.testing.assert_close(readout(feats, torch.tensor([0, 1, 2, 0])), before)
    for p in readout.parameters():
        p.requires_grad_(False)
    for p in readout.subject_parameters("subj09"):
        p.requires_grad_(True)
    readout(feats, torch.tensor([3, 0, 3, 1])).sum().backward()
    assert readout.per_subject["subj09"].weight.grad is not None
    assert readout.per_subject["subj01"].weight.grad is None
    readout.remove_subject("subj02")
    assert readout.subjects == ["subj01", "subj03", "subj09"]
    assert not any(k.startswith("per_subject.subj02") for k in readout.state_dict())
    with pytest.raises(ConfigError, match="subject 'subj01' is already in this readout"):
        readout.add_subject("subj01")
    with pytest.raises(ConfigError, match="subject name '../x' is not valid"):
        readout.add_subject("../x")
    with pytest.raises(ConfigError, match="duplicate subject names"):
        create_readout("grouplin", SHAPES, ["subj01", "subj01"], 10, latent_dim=4)


def test_registry_errors_list_valid_names():
    assert {"grouplin", "grouplin_seq"} <= set(list_readouts())
    with pytest.raises(ConfigError, match=r"unknown readout 'linear'; available: \['grouplin'"):
        create_readout("linear", SHAPES, SUBJECTS, 10)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['model.readout.depth'\]; valid: "):
        create_readout("grouplin", SHAPES, SUBJECTS, 10, depth=2)
    with pytest.raises(ConfigError, match="'model.readout.embedding_scale' must be one of"):
        create_readout("grouplin", SHAPES, SUBJECTS, 10, embedding_scale="max")


@dataclass
class _MeanOptions:
    scale: float = 1.0


@register_readout("test_mean_pool", _MeanOptions)
class _MeanPoolReadout(Readout):
    """A new readout in one class: mean-pooled features, one linear map per subject."""

    def __init__(self, feature_shapes, n_vertices, options):
        super().__init__(feature_shapes, n_vertices, options)
        self.n_channels = sum(s[0] for s in self.feature_shapes)

    def make_subject_module(self):
        return nn.Linear(self.n_channels, self.n_vertices)

    def forward(self, features, subject):
        pooled = torch.cat([f.flatten(2).mean(2) for f in features], 1) * self.options.scale
        from brainencoder.models.readouts.subject_layers import apply_per_subject

        return apply_per_subject(pooled, subject, self.subject_modules())


def test_a_new_readout_plugs_into_the_encoder_and_model_files(store, tmp_path):
    readout = {"name": "test_mean_pool", "scale": 2.0}
    enc = create_encoder("tiny", store.space, img_size=32, readout=readout)
    assert isinstance(enc.readout, _MeanPoolReadout)
    save_encoder(enc, tmp_path / "m.safetensors")
    back = load_encoder(tmp_path / "m.safetensors")
    assert back.config.readout == readout
    images = np.asarray(store.images[:3])
    a, b = enc.predict(images, "subj01"), back.predict(images, "subj01")
    np.testing.assert_array_equal(a["rh"], b["rh"])


def test_model_files_with_non_finite_weights_are_refused(store, tmp_path):
    from brainencoder.util.errors import CheckpointError

    enc = create_encoder("tiny", store.space, img_size=32, readout={"latent_dim": 8})
    with torch.no_grad():
        enc.readout.shared.weight[0, 0] = float("nan")
    save_encoder(enc, tmp_path / "nan.safetensors")
    with pytest.raises(CheckpointError, match=r"1 weight tensor\(s\) hold NaN or inf"):
        load_encoder(tmp_path / "nan.safetensors")
