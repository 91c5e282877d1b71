import numpy as np
import pytest
import torch

from brainencoder.core.space import GroupSpace
from brainencoder.models.encoder import build_encoder, create_encoder
from brainencoder.models.modelfile import load_encoder, save_encoder
from brainencoder.models.pca import GroupPCA, fit_group_pca, resolve_n_components
from brainencoder.models.readouts.layers import FactorizedProjection
from brainencoder.models.readouts.subject_layers import apply_per_subject
from brainencoder.models.trunk import Trunk, apply_freeze, resolve_layers
from brainencoder.util.errors import BrainEncoderError, CheckpointError, ConfigError

TINY = {"img_size": 32, "readout": {"hidden_dim": 16, "latent_dim": 8, "dropout": 0.0}}


def test_vit_trunk_with_prefix_tokens_and_globs():
    trunk = Trunk("test_vit", "blocks.[024]")
    assert trunk.indices == [0, 2, 4] and trunk.layer_names == ["blocks.0", "blocks.2", "blocks.4"]
    assert trunk.model.num_prefix_tokens == 1
    feats = trunk(torch.randn(2, 3, trunk.input_size, trunk.input_size))
    assert [tuple(f.shape) for f in feats] == [(2, 64, 10, 10)] * 3
    assert trunk.feature_shapes() == [(64, 10, 10)] * 3
    assert len(trunk.model.blocks) == 5  # pruned after the last chosen block
    assert trunk.data_config["mean"] == (0.5, 0.5, 0.5)  # from timm's pretrained config


def test_vit_trunk_returns_prefix_tokens_first():
    trunk = Trunk("test_vit", [1], prefix_tokens=True).eval()
    x = torch.randn(2, 3, trunk.input_size, trunk.input_size)
    (tokens,) = trunk(x)
    assert tuple(tokens.shape) == (2, 64, 101)  # 1 class token + 10 x 10 patches
    captured = {}
    trunk.model.blocks[1].register_forward_hook(lambda m, i, o: captured.setdefault("o", o))
    trunk(x)  # the block's own output (B, T, C), class token first
    torch.testing.assert_close(tokens, captured["o"].transpose(1, 2))


def test_convnet_trunk_img_size_optional_other_kwargs_refused():
    trunk = Trunk("resnet18", [1, -1], img_size=64)
    assert trunk.layer_names == ["layer1", "layer4"]
    assert trunk.feature_shapes() == [(64, 16, 16), (512, 2, 2)]
    with pytest.raises(ConfigError, match="does not accept .*'trunk_kwargs.attn_drop_rate'"):
        Trunk("resnet18", [1], attn_drop_rate=0.1)


def test_trunk_checkpoint_path_is_refused_for_trunk_weights(store, tmp_path):
    """timm's checkpoint_path would load strictly into the unpruned model and stay in the
    model file's config (re-read at every load): refused, naming model.trunk_weights,
    which loads the same file; a model file of an earlier version that holds it loads."""
    import timm

    weights = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18").state_dict(), weights)
    with pytest.raises(ConfigError, match=f"pass the file as model.trunk_weights={weights}"):
        Trunk("resnet18", [1], checkpoint_path=str(weights))
    with pytest.raises(ConfigError, match="'trunk_kwargs.checkpoint_path' is not supported"):
        create_encoder("tiny", store.space, **TINY, trunk_kwargs={"checkpoint_path": "x.pth"})
    model = create_encoder("tiny", store.space, **TINY, trunk_weights=str(weights))
    expected = torch.load(weights, weights_only=True)["conv1.weight"]
    assert torch.equal(model.trunk.model.conv1.weight, expected)
    model.config.trunk_kwargs = {"checkpoint_path": str(tmp_path / "gone.pth")}
    save_encoder(model, tmp_path / "m.safetensors")
    again = load_encoder(tmp_path / "m.safetensors")
    assert torch.equal(again.trunk.model.conv1.weight, expected)


def test_layer_spec_errors():
    names = ["blocks.0", "blocks.1"]
    with pytest.raises(ConfigError, match="layer pattern 'blocks.9' matches no trunk layer"):
        resolve_layers(names, "blocks.9")
    with pytest.raises(ConfigError, match="layer index 5 is out of range"):
        resolve_layers(names, [5])
    with pytest.raises(ConfigError, match="'layers' is empty"):
        resolve_layers(names, [])
    with pytest.raises(ConfigError, match="unknown timm model 'no_such_vit'"):
        Trunk("no_such_vit", [0])


def test_freeze_patterns():
    trunk = Trunk("test_vit", [0, 1])
    names = apply_freeze(trunk.model, ["cls_token", "blocks*norm*"])
    assert "cls_token" in names and "blocks.1.norm2.weight" in names
    assert not trunk.model.cls_token.requires_grad
    assert trunk.model.blocks[0].attn.qkv.weight.requires_grad
    with pytest.raises(ConfigError, match='freeze pattern "fc_norm\'\\*" matches no parameter'):
        apply_freeze(trunk.model, ["fc_norm'*"])


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_load_through_timm(tmp_path, suffix):
    import timm
    from safetensors.torch import save_file

    src = timm.create_model("test_vit", pretrained=False)
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    trunk = Trunk("test_vit", [0], weights=path)
    torch.testing.assert_close(trunk.model.patch_embed.proj.weight, src.patch_embed.proj.weight)
    with pytest.raises(BrainEncoderError, match="trunk weights file not found"):
        Trunk("test_vit", [0], weights=tmp_path / "missing.safetensors")


def test_pretrained_offline_gives_instructions(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # the key a user types: model.trunk_weights, not trunk_weights (no such key)
    with pytest.raises(BrainEncoderError, match="pass the file: model.trunk_weights=PATH to train"):
        Trunk("test_vit.r160_in1k", [0], pretrained=True)


@pytest.mark.numerics
@pytest.mark.parametrize(("c", "hw"), [(32, 4), (4, 6)])  # both contraction orders
def test_factorized_projection_matches_naive(c, hw):
    proj = FactorizedProjection(c, hw * hw, 5)
    x = torch.randn(3, c, hw, hw)
    naive = torch.einsum("bcp,kp,kc->bk", x.flatten(2), proj.spatial, proj.channel)
    torch.testing.assert_close(proj(x), naive, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="does not match this projection"):
        proj(torch.randn(3, c + 1, hw, hw))


def test_per_subject_mixed_batch_equals_per_group():
    maps = [torch.nn.Linear(4, 3) for _ in range(3)]
    x, groups = torch.randn(6, 4), torch.tensor([2, 0, 1, 2, 0, 1])
    out = apply_per_subject(x, groups, maps)
    for i, g in enumerate(groups.tolist()):
        torch.testing.assert_close(out[i], maps[g](x[i]))


def _space():
    rng = np.random.default_rng(0)
    masks = {}
    for s in ("subj01", "subj02"):
        masks[s] = {h: rng.random(50) < 0.6 for h in ("lh", "rh")}
    return GroupSpace.from_masks(masks)


@pytest.mark.numerics
def test_encoder_mixed_batch_and_missing_vertices():
    space = _space()
    enc = create_encoder("tiny", space, **TINY).eval()
    x = torch.rand(4, 3, 32, 32)
    subj = torch.tensor([0, 1, 1, 0])
    with torch.no_grad():
        mixed = enc(x, subj)
        alone = torch.cat([enc(x[i : i + 1], subj[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(mixed, alone, rtol=1e-4, atol=1e-5)
    out = enc.predict(np.zeros((3, 40, 40, 3), np.uint8), "subj02")
    assert out["lh"].shape == (3, space.n_subject_vertices("subj02", "lh"))
    assert out["rh"].dtype == np.float32
    with pytest.raises(Exception, match="subject 'subj05' is not in this model's group space"):
        enc.predict(np.zeros((1, 8, 8, 3), np.uint8), "subj05")


def test_encoder_factory_rejects_unknown():
    with pytest.raises(ConfigError, match=r"unknown encoder 'huge'; available: \['eva02_base'"):
        create_encoder("huge", _space())
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['model.dropuot'\]"):
        create_encoder("tiny", _space(), dropuot=0.1)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['model.readout.dropuot'\]"):
        create_encoder("tiny", _space(), readout={"dropuot": 0.1})
    with pytest.raises(ConfigError, match=r"unknown readout 'nope'; available: \['grouplin'"):
        create_encoder("tiny", _space(), readout={"name": "nope"})
    with pytest.raises(ConfigError, match="'model.readout.hidden_dim' must be int; got 'abc'"):
        create_encoder("tiny", _space(), readout={"hidden_dim": "abc"})


def test_save_load_round_trip_with_pca(tmp_path, store):
    pca = fit_group_pca(store, 8)
    enc = create_encoder("tiny", store.space, pca, img_size=32, readout={"latent_dim": "auto"})
    assert enc.readout.embedding.components.shape[0] == 8  # auto: all components of the PCA
    assert enc.config.readout["latent_dim"] == 8  # resolved in the stored config
    enc = create_encoder("tiny", store.space, pca, **TINY)
    with torch.no_grad():  # move BN stats away from defaults
        enc.readout.projections[0].norm.running_mean.add_(0.5)
    save_encoder(enc, tmp_path / "m.safetensors")
    back = load_encoder(tmp_path / "m.safetensors")
    images = np.asarray(store.images[:5])
    a, b = enc.predict(images, "subj03"), back.predict(images, "subj03")
    np.testing.assert_array_equal(a["lh"], b["lh"])
    scaled = pca.components * np.sqrt(pca.explained_variance)[:, None]  # grouplin_seq: std
    np.testing.assert_allclose(back.readout.embedding.components.numpy(), scaled, rtol=1e-6)
    other = create_encoder(
        "tiny", store.space, pca, img_size=32, readout={"hidden_dim": 12, "latent_dim": 8}
    )
    from brainencoder.models.modelfile import load_state, read_model_file

    tensors, _ = read_model_file(tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="different model configuration .*shape mismatch"):
        load_state(other, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, "f")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_encoder(tmp_path / "bad.safetensors")


@pytest.mark.numerics
def test_pca_matches_sklearn_and_is_deterministic(store):
    from sklearn.decomposition import PCA

    pca = fit_group_pca(store, 6, seed=3)
    again = fit_group_pca(store, 6, seed=3)
    np.testing.assert_array_equal(pca.components, again.components)
    # reference: dense matrix with missing entries imputed by the vertex mean
    rows = []
    for name in store.names:
        block = np.zeros((len(store.split_rows(name, "train")), store.space.n_vertices))
        block[:] = pca.mean
        block[:, store.space.subject_columns(name)] = store.fmri(name)[
            store.split_rows(name, "train")
        ]
        rows.append(block)
    dense = np.concatenate(rows)
    ref = PCA(6, svd_solver="full").fit(dense)
    np.testing.assert_allclose(pca.mean, dense.mean(0), atol=1e-5)
    overlap = np.abs(pca.components @ ref.components_.T)
    np.testing.assert_allclose(np.diag(overlap), 1.0, atol=1e-3)
    np.testing.assert_allclose(pca.explained_variance, ref.explained_variance_, rtol=1e-3)
    # the streaming randomized path spans the same leading subspace
    streamed = fit_group_pca(store, 6, seed=3, max_dense_bytes=0, n_iter=6)
    cos = np.linalg.svd(streamed.components[:3] @ pca.components.T, compute_uv=False)
    assert cos.min() > 0.99


def test_pca_component_limits(store, tmp_path):
    n = sum(len(store.split_rows(s, "train")) for s in store.names)
    with pytest.raises(ConfigError, match=f"cannot fit 5000 PCA components from {n} training"):
        fit_group_pca(store, 5000)
    assert resolve_n_components("auto", 10, 300) == 10
    assert resolve_n_components("auto", 10_000, 50_000) == 2048
    with pytest.raises(ConfigError, match=r"'seed' must be in \[0, 4294967295\]"):
        fit_group_pca(store, 4, seed=2**64)
    pca = fit_group_pca(store, 4)
    pca.save(tmp_path / "p.safetensors")
    np.testing.assert_array_equal(GroupPCA.load(tmp_path / "p.safetensors").mean, pca.mean)


def test_reference_configuration_builds_at_full_scale():
    """eva02 base, 6 layers, 8 subjects, 39,548 group vertices: a forward pass of 2 images."""
    rng = np.random.default_rng(0)
    n_fs = 163842
    masks = {}
    for k in range(8):
        masks[f"subj{k + 1:02d}"] = {}
        for h, n in (("lh", 19004), ("rh", 20544)):
            m = np.zeros(n_fs, bool)
            m[:n] = True
            if k == 5:
                m[rng.choice(n, 30, replace=False)] = False
            masks[f"subj{k + 1:02d}"][h] = m
    space = GroupSpace.from_masks(masks)
    assert space.n_vertices == 39548
    enc = create_encoder("eva02_base", space, pretrained=False).eval()
    with torch.no_grad():
        out = enc(torch.rand(2, 3, 224, 224), torch.tensor([0, 7]))
    assert out.shape == (2, 39548)


def test_build_encoder_builds_the_given_config_with_its_context(store):
    """build_encoder: exactly the config it is given, the readout fed by the context."""
    from brainencoder.models.encoder import Encoder, preset_config
    from brainencoder.models.readouts import ReadoutContext

    pca = fit_group_pca(store, 8)
    config = preset_config("tiny", TINY)
    model = build_encoder(config, store.space, ReadoutContext(pca=pca))
    assert isinstance(model, Encoder) and model.config is config and model.space is store.space
    assert model.trunk.layer_names == ["layer1", "layer2", "layer3"] and model.input_size == 32
    assert model.readout.embedding.components.shape == (8, store.space.n_vertices)
    np.testing.assert_allclose(model.readout.embedding.mean.numpy(), pca.mean, rtol=0, atol=0)
    bare = build_encoder(config, store.space)  # no PCA: a random basis with zero mean
    assert not bare.readout.embedding.mean.any()
    with torch.no_grad():
        out = model.eval()(torch.rand(3, 3, 32, 32), torch.tensor([0, 2, 1]))
    assert out.shape == (3, store.space.n_vertices) and torch.isfinite(out).all()


def test_ridge_baseline_trunk_equals_tiny_encoder_trunk(store):
    """benchmarks/accuracy.py compares GroupLin and ridge on the same random trunk."""
    from brainencoder.baselines.ridge import FeatureExtractor, FeatureSpec

    torch.manual_seed(0)  # as train() does before building the encoder (seed 0)
    enc = create_encoder("tiny", store.space, readout={"latent_dim": 8})
    fx = FeatureExtractor(FeatureSpec(seed=0))
    a, b = enc.trunk.state_dict(), fx.trunk.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
