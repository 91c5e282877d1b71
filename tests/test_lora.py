"""LoRA fine-tuning of the trunk: equations, merge, training, resume, model files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from brainencoder.models.encoder import create_encoder
from brainencoder.models.lora import LoRAConfig, LoRALayer, apply_lora, merged_state_dict
from brainencoder.models.modelfile import load_encoder, read_model_file
from brainencoder.training.config import load_config
from brainencoder.training.loop import train
from brainencoder.training.step import param_groups
from brainencoder.util.errors import ConfigError
from conftest import FAST_TRAIN


@pytest.mark.numerics
@pytest.mark.parametrize("base", [nn.Linear(6, 5), nn.Conv2d(3, 4, 3, stride=2, padding=1)])
def test_lora_layer_adds_a_low_rank_update_that_merges(base):
    torch.manual_seed(0)
    layer = LoRALayer(base, rank=2, alpha=6.0)
    x = torch.randn(2, 6) if isinstance(base, nn.Linear) else torch.randn(2, 3, 7, 7)
    torch.testing.assert_close(layer(x), base(x))  # B starts at zero: nothing changes
    with torch.no_grad():
        layer.lora_b.normal_()
    delta = 3.0 * layer.lora_b @ layer.lora_a.reshape(2, -1)  # alpha / rank = 3
    merged = type(base)(*_args(base))
    merged.load_state_dict(
        {"weight": base.weight + delta.reshape(base.weight.shape), "bias": base.bias}
    )
    torch.testing.assert_close(layer(x), merged(x), atol=1e-5, rtol=1e-5)
    assert not base.weight.requires_grad and layer.lora_a.requires_grad
    exempt = [g for g in param_groups(layer, 0.5, True) if g["weight_decay"] == 0.0]
    assert {id(p) for p in exempt[0]["params"]} == {id(layer.lora_a), id(layer.lora_b)}


def _args(base):
    if isinstance(base, nn.Linear):
        return base.in_features, base.out_features
    return base.in_channels, base.out_channels, base.kernel_size, base.stride, base.padding


@pytest.mark.numerics
def test_apply_lora_on_a_vit_and_merge(store):
    enc = create_encoder(
        "tiny", store.space, trunk="test_vit", layers=[0, 1], img_size=32, prefix_tokens=False
    ).eval()
    wrapped = apply_lora(enc.trunk.model, LoRAConfig(rank=2))
    assert wrapped and all(name.endswith("attn.qkv") for name in wrapped)
    with torch.no_grad():
        for name in wrapped:
            enc.trunk.model.get_submodule(name).lora_b.normal_()
    images = torch.rand(2, 3, 32, 32)
    subject = torch.tensor([0, 1])
    out = enc(images, subject)
    plain = create_encoder(
        "tiny", store.space, trunk="test_vit", layers=[0, 1], img_size=32, prefix_tokens=False
    ).eval()
    plain.load_state_dict(merged_state_dict(enc))  # the merged model is a plain model
    torch.testing.assert_close(plain(images, subject), out, atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="already has LoRA layers"):
        apply_lora(enc.trunk.model, LoRAConfig())
    with pytest.raises(ConfigError, match=r"lora target 'layer9\*' matches no Linear or Conv2d"):
        apply_lora(plain.trunk.model, LoRAConfig(targets=["*attn.qkv", "layer9*"]))


def _lora_run(tmp_path, store, *extra):
    args = [
        *[a for a in FAST_TRAIN if not a.startswith(("cache_features", "model."))],
        "epochs=2",
        # a random-init ResNet's residual branches end in a BatchNorm with weight 0
        # (timm's zero_init_last), so only the shortcut conv gets a gradient there
        "lora={rank: 2, alpha: 4, targets: ['layer3.*.conv*', 'layer3.0.downsample.0']}",
        *extra,
    ]
    return load_config(None, args)


def test_lora_phase_trains_resumes_and_saves_a_merged_model(store, tmp_path):
    p1 = load_config(None, [*FAST_TRAIN, f"cache_dir={tmp_path / 'c'}"])
    train(p1, store.path, tmp_path / "p1")
    cfg = _lora_run(tmp_path, store, f"init_from={tmp_path / 'p1'}", "lr=1e-3")
    summary = train(cfg, store.path, tmp_path / "full")
    before = load_encoder(tmp_path / "p1" / "best.safetensors").state_dict()
    n_lora = 2 * (128 * 9 + 256) + 3 * 2 * (256 * 9 + 256) + 2 * (128 + 256)  # 5 convs, rank 2
    readout = sum(
        v.numel()
        for k, v in before.items()
        if k.startswith("readout.")
        and v.is_floating_point()
        and "running" not in k
        and "embedding" not in k
    )
    assert summary["trainable_parameters"] == readout + n_lora
    tensors, meta = read_model_file(tmp_path / "full" / "best.safetensors")
    assert "lora" not in meta and not any("lora_" in k or ".base." in k for k in tensors)
    after = load_encoder(tmp_path / "full" / "best.safetensors").state_dict()
    changed = [k for k in before if k.startswith("trunk.") and not torch.equal(before[k], after[k])]
    assert changed and all(
        k.startswith("trunk.model.layer3.") and k.endswith("weight") for k in changed
    )
    # resume mid-run continues the same LoRA factors: identical weights
    assert train(cfg, store.path, tmp_path / "part", stop_after_steps=3) == {"stopped_at_step": 3}
    _, ckpt_meta = read_model_file(
        next((tmp_path / "part" / "checkpoints").glob("step-*")) / "model.safetensors"
    )
    assert "lora" in ckpt_meta
    train(cfg, store.path, tmp_path / "part", resume=True)
    again = load_encoder(tmp_path / "part" / "best.safetensors").state_dict()
    assert all(torch.equal(after[k], again[k]) for k in after)
    images = np.asarray(store.images[:2])
    assert np.isfinite(
        load_encoder(tmp_path / "full" / "best.safetensors").predict(images, "subj01")["lh"]
    ).all()


def test_lora_config_errors():
    with pytest.raises(ConfigError, match="set train_trunk: false"):
        load_config(None, ["lora={rank: 2}", "train_trunk=true"])
    with pytest.raises(ConfigError, match="set cache_features: false"):
        load_config(None, ["lora={rank: 2}", "cache_features=true"])
    with pytest.raises(ConfigError, match="'lora.rank' must be >= 1"):
        load_config(None, ["lora={rank: 0}"])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['lora.rnak'\]"):
        load_config(None, ["lora={rnak: 2}"])


def test_lora_on_eva02_whose_attention_reads_the_qkv_weight_directly():
    # timm's EVA attention calls F.linear(x, self.qkv.weight, bias) with its own q/v bias:
    # the wrapped layer must offer the updated weight (before: AttributeError 'weight')
    import timm

    model = timm.create_model("eva02_tiny_patch14_224.mim_in22k", pretrained=False, img_size=28)
    x = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    before = model(x)
    layers = apply_lora(model, LoRAConfig(rank=2))
    assert layers and all(name.endswith("attn.qkv") for name in layers)
    # B starts at zero: the same function (tolerance: the sum W + 0 is exact, only the
    # order of operations of the identical product may differ)
    torch.testing.assert_close(model(x), before, rtol=0, atol=1e-6)
    wrapped = [m for m in model.modules() if isinstance(m, LoRALayer)]
    for layer in wrapped:
        nn.init.normal_(layer.lora_b)
    after = model(x)
    after.sum().backward()
    assert not torch.allclose(after, before, atol=1e-3)
    assert all(
        layer.lora_a.grad is not None and layer.lora_a.grad.abs().sum() > 0 for layer in wrapped
    )
    merged = merged_state_dict(model)  # the merged weight is what the forward pass used
    for name, layer in zip(layers, wrapped):
        torch.testing.assert_close(merged[f"{name}.weight"], layer.weight.detach())
