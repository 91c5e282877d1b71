"""Hugging Face trunks (DINOv2, CLIP and SigLIP vision) built from random-init configs, offline.

Each model is written with ``save_pretrained`` into a folder and read back as
``model.trunk=hf:FOLDER``: the features, training from a feature cache, predict,
submit, explore, a ridge baseline and LoRA, and the errors of a missing model.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from brainencoder.cli.main import main
from brainencoder.models.encoder import create_encoder
from brainencoder.models.lora import LoRAConfig, apply_lora, merged_state_dict
from brainencoder.models.modelfile import load_encoder, read_model_file
from brainencoder.models.trunk import Trunk
from brainencoder.runs.load import load_model
from brainencoder.training.config import load_config
from brainencoder.training.loop import train
from brainencoder.util.errors import ConfigError
from conftest import TINY_TRAIN

transformers = pytest.importorskip("transformers")

SIZE, PATCH, WIDTH = 56, 14, 32  # 4 x 4 patch maps of 32 channels
TOWER = {
    "hidden_size": WIDTH,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "image_size": SIZE,
    "patch_size": PATCH,
}
CLIP_STATS = {"image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954] * 3}


def _dinov2(registers: int = 0):
    if registers:
        config = transformers.Dinov2WithRegistersConfig(**TOWER, num_register_tokens=registers)
        return transformers.Dinov2WithRegistersModel(config)
    return transformers.Dinov2Model(transformers.Dinov2Config(**TOWER))


def _clip():  # a whole CLIP model: the trunk is its vision tower
    text = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = transformers.CLIPConfig(vision_config=TOWER, text_config=text)
    return transformers.CLIPModel(config)


def _siglip():
    return transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**TOWER))


MODELS = {"dinov2": _dinov2, "clip": _clip, "siglip": _siglip, "dinov2_reg": lambda: _dinov2(4)}


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """Folders of random-init models (as ``save_pretrained`` or ``hf download`` write them)."""
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    for name, build in MODELS.items():
        build().eval().save_pretrained(root / name)
    (root / "clip" / "preprocessor_config.json").write_text(
        json.dumps({**CLIP_STATS, "crop_size": {"height": SIZE, "width": SIZE}})
    )
    return root


def _reference(model, x):
    """The model's own hidden states after each block (vision tower of a CLIP model)."""
    tower = model.vision_model if isinstance(model, transformers.CLIPModel) else model
    with torch.no_grad():
        return tower(pixel_values=x, output_hidden_states=True).hidden_states[1:]


@pytest.mark.parametrize(("name", "n_prefix"), [("dinov2", 1), ("clip", 1), ("siglip", 0)])
def test_hf_trunk_maps_are_the_models_own_hidden_states(hf_dirs, name, n_prefix):
    folder = hf_dirs / name
    model = transformers.AutoModel.from_pretrained(folder, local_files_only=True).eval()
    trunk = Trunk(f"hf:{folder}", layers="blocks.*", pretrained=True).eval()
    assert trunk.family == "hf" and trunk.layer_names == ["blocks.0", "blocks.1"]
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        maps = trunk(x)
    for got, ref in zip(maps, _reference(model, x), strict=True):
        patches = ref[:, n_prefix:].transpose(1, 2).reshape(2, WIDTH, SIZE // PATCH, -1)
        torch.testing.assert_close(got, patches, atol=1e-5, rtol=1e-5)
    mean = CLIP_STATS["image_mean"] if name == "clip" else None  # its preprocessor_config.json
    assert mean is None or list(trunk.data_config["mean"]) == mean
    assert trunk.input_size == SIZE
    # model_kwargs rebuild the architecture without the folder
    again = Trunk("anywhere", layers=[1], family="hf", **trunk.model_kwargs).eval()
    again.load_state_dict(trunk.state_dict(), strict=False)
    with torch.no_grad():
        torch.testing.assert_close(again(x)[0], maps[1])


def test_prefix_tokens_hold_the_class_and_register_tokens(hf_dirs):
    trunk = Trunk(f"hf:{hf_dirs / 'dinov2_reg'}", layers=[1], prefix_tokens=True, pretrained=True)
    model = transformers.AutoModel.from_pretrained(hf_dirs / "dinov2_reg", local_files_only=True)
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        (tokens,) = trunk.eval()(x)
        ref = _reference(model.eval(), x)[1]
    assert tokens.shape == (1, WIDTH, 1 + 4 + 16)  # class, 4 registers, 4 x 4 patches
    torch.testing.assert_close(tokens, ref.transpose(1, 2), atol=1e-5, rtol=1e-5)
    bigger = Trunk(f"hf:{hf_dirs / 'clip'}", layers=[0], img_size=2 * SIZE, pretrained=True)
    assert bigger.feature_shapes() == [(WIDTH, 8, 8)]  # position embedding interpolated


@pytest.mark.parametrize(
    ("name", "readout", "options"),
    [
        ("dinov2", "point", ["model.readout.channels=8"]),
        ("clip", "grouplin", ["model.readout.hidden_dim=8", "model.readout.latent_dim=4"]),
    ],
)
def test_hf_trunk_trains_from_a_cache_then_predicts_explores_and_submits(
    hf_dirs, store, synth_root, tmp_path, capsys, name, readout, options
):
    folder = shutil.copytree(hf_dirs / name, tmp_path / name)
    args = [
        *[a for a in TINY_TRAIN if not a.startswith("model.")],
        f"model.trunk=hf:{folder}",
        "model.layers=[0, 1]",
        "model.pretrained=true",
        f"model.img_size={SIZE}",
        f"model.readout.name={readout}",
        *options,
        f"cache_dir={tmp_path / 'cache'}",
    ]
    run = tmp_path / "run"
    train(load_config(None, args), store.path, run)
    assert len(list((tmp_path / "cache").glob("*/manifest.json"))) == 1
    shutil.rmtree(folder)  # the model file holds the trunk's config and weights
    model = load_encoder(run / "best.safetensors")
    assert model.config.trunk_family == "hf" and model.config.trunk == str(folder)
    assert model.config.readout["name"] == readout
    images = synth_root / "subj01" / "test_split" / "test_images"
    out = tmp_path / "pred.npz"
    assert main(["predict", str(run), str(images), "--subject", "subj01", "--out", str(out)]) == 0
    with np.load(out) as f:
        assert f["lh"].shape[0] == 12 and np.isfinite(f["lh"]).all()
    zip_path = tmp_path / "s.zip"
    assert main(["submit", str(run), "--data", str(synth_root), "--out", str(zip_path)]) == 0
    truth = str(synth_root / "truth")
    assert main(["score", str(zip_path), "--truth", truth]) == 0
    assert "challenge score" in capsys.readouterr().out
    argv = ["explore", str(run), str(images), "--subject", "subj01", "--roi", "V1v", "--top", "3"]
    assert main([*argv, "--out", str(tmp_path / "explore")]) == 0


def test_ridge_baseline_on_an_hf_trunk(hf_dirs, store, synth_root, tmp_path):
    folder = shutil.copytree(hf_dirs / "dinov2", tmp_path / "dinov2")
    out = tmp_path / "ridge"
    argv = ["baseline", "ridge", "--store", str(store.path), "--out", str(out)]
    argv += ["--trunk", f"hf:{folder}", "--layers", "blocks.1", "--pretrained"]
    assert main([*argv, "--img-size", str(SIZE), "--pooling", "mean"]) == 0
    images = np.asarray(store.images[:4])
    before = load_model(out).predict(images, "subj02")
    shutil.rmtree(folder)  # the ridge model holds the trunk's config and weights
    ridge = load_model(out)
    assert ridge.extractor.spec.trunk_family == "hf"
    np.testing.assert_array_equal(ridge.predict(images, "subj02")["rh"], before["rh"])


@pytest.mark.numerics
@pytest.mark.parametrize("name", ["dinov2", "clip"])
def test_lora_targets_the_hf_attention_projections_and_merges(hf_dirs, store, name):
    def encoder():
        torch.manual_seed(0)
        trunk = f"hf:{hf_dirs / name}"
        return create_encoder("tiny", store.space, trunk=trunk, layers=[0, 1], img_size=SIZE)

    enc = encoder().eval()
    wrapped = apply_lora(enc.trunk.model, LoRAConfig(rank=2))
    assert sorted({w.rsplit(".", 1)[1] for w in wrapped}) == ["k_proj", "q_proj", "v_proj"]
    assert len(wrapped) == 6 and all(w.startswith("blocks.") for w in wrapped)
    with torch.no_grad():
        for w in wrapped:
            enc.trunk.model.get_submodule(w).lora_b.normal_()
    images, subject = torch.rand(2, 3, SIZE, SIZE), torch.tensor([0, 2])
    with torch.no_grad():
        out = enc(images, subject)
        plain = encoder().eval()
        plain.load_state_dict(merged_state_dict(enc))
        torch.testing.assert_close(plain(images, subject), out, atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match=r"lora target 'blocks\.\*\.attn\.qkv' matches no"):
        apply_lora(plain.trunk.model, LoRAConfig(targets=["blocks.*.attn.qkv"]))


def test_lora_phase_on_an_hf_trunk_saves_a_merged_model(hf_dirs, store, tmp_path):
    args = [
        *[a for a in TINY_TRAIN if not a.startswith(("model.img_size", "cache_features"))],
        f"model.trunk=hf:{hf_dirs / 'dinov2'}",
        "model.layers=[1]",
        "model.pretrained=true",
        f"model.img_size={SIZE}",
        "lora={rank: 2, alpha: 4}",
    ]
    summary = train(load_config(None, args), store.path, tmp_path / "run")
    tensors, meta = read_model_file(tmp_path / "run" / "best.safetensors")
    assert "lora" not in meta and not any("lora_" in k for k in tensors)
    n_lora = 2 * 3 * 2 * (WIDTH + WIDTH)  # 2 blocks x q, k, v x rank 2 x (in + out)
    readout = sum(
        v.numel()
        for k, v in tensors.items()
        if k.startswith("model.readout.") and "running" not in k and "embedding" not in k
        if v.is_floating_point()
    )
    assert summary["trainable_parameters"] == readout + n_lora
    plain = Trunk(f"hf:{hf_dirs / 'dinov2'}", layers=[1], pretrained=True).state_dict()
    merged = {k[12:]: v for k, v in tensors.items() if k.startswith("model.trunk.")}
    changed = sorted(k for k in plain if not torch.equal(plain[k], merged[k]))
    projections = ("q_proj.weight", "k_proj.weight", "v_proj.weight")
    assert changed and all(k.endswith(projections) for k in changed)


def test_missing_or_unsupported_models_are_one_line_config_errors(hf_dirs, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cases = {
        "hf:facebook/dinov2-base": (
            r"Hugging Face model 'facebook/dinov2-base' is not in the local cache "
            rf"{tmp_path / 'hub'} \(trunks load offline\): on a machine with network run "
            r"'hf download facebook/dinov2-base'.*set model.trunk=hf:DIR"
        ),
        f"hf:{tmp_path / 'nowhere'}": r"Hugging Face trunk folder .*nowhere not found",
        f"hf:{tmp_path}": r"no config.json; a Hugging Face model folder is written by save_pre",
    }
    for trunk, message in cases.items():
        with pytest.raises(ConfigError, match=message) as info:
            Trunk(trunk, layers=[0], pretrained=True)
        assert "\n" not in str(info.value)
    vit = tmp_path / "vit"
    transformers.ViTModel(transformers.ViTConfig(**TOWER)).save_pretrained(vit)
    with pytest.raises(ConfigError, match=r"is a 'vit' model; supported: \['clip_vision_model'"):
        Trunk(f"hf:{vit}", layers=[0])
    folder = f"hf:{hf_dirs / 'dinov2'}"
    with pytest.raises(ConfigError, match=r"'trunk_kwargs.drop_rate' is not a setting of"):
        Trunk(folder, layers=[0], drop_rate=0.1)
    with pytest.raises(ConfigError, match=r"'model.trunk_weights' is for timm trunks"):
        Trunk(folder, layers=[0], weights=tmp_path / "w.safetensors")
    with pytest.raises(ConfigError, match=r"names family 'hf', model.trunk_family 'other'"):
        load_config(None, [f"model.trunk={folder}", "model.trunk_family=other"])
    with pytest.raises(ConfigError, match=r"unknown trunk family 'hff'"):
        load_config(None, ["model.trunk=hff:x"])
