"""import-original: checkpoints in the original entry's key layout, checked against an
independent forward pass written from its equations (childmindresearch/algonauts23,
algonauts23/models/group_linear.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainencoder.cli.main import main
from brainencoder.models.modelfile import load_encoder
from brainencoder.models.original import import_original
from brainencoder.util.errors import CheckpointError

TRUNK = "eva02_tiny_patch14_224"  # same family and key names as eva02 base, 5.5 M parameters
LAYERS = [1, 3]
K, L = 12, 6  # hidden_dim, latent_dim


def _original_encoder_state(trunk, space, gen):
    """A GroupLinearEncoder state dict (8 subjects) with random weights."""
    x = torch.zeros(1, 3, 224, 224)
    out = trunk.forward_intermediates(x, indices=LAYERS, intermediates_only=True)
    tokens = out[0].shape[-1] * out[0].shape[-2] + trunk.num_prefix_tokens
    c = out[0].shape[1]
    state = {}
    for i in range(len(LAYERS)):
        state[f"feat_projs.{i}.proj.weight1"] = torch.randn(K, tokens, generator=gen) * 0.1
        state[f"feat_projs.{i}.proj.weight2"] = torch.randn(K, c, generator=gen) * 0.1
        state[f"feat_projs.{i}.norm.weight"] = torch.rand(K, generator=gen) + 0.5
        state[f"feat_projs.{i}.norm.bias"] = torch.randn(K, generator=gen)
        state[f"feat_projs.{i}.norm.running_mean"] = torch.randn(K, generator=gen)
        state[f"feat_projs.{i}.norm.running_var"] = torch.rand(K, generator=gen) + 0.5
        state[f"feat_projs.{i}.norm.num_batches_tracked"] = torch.tensor(100)
    state["shared_proj.weight"] = torch.randn(L, K, generator=gen)
    state["subj_proj.fc.weight"] = torch.randn(8 * L, K, generator=gen)
    state["subj_proj.fc.bias"] = torch.randn(8 * L, generator=gen)
    state["embed.weight"] = torch.randn(space.n_vertices, L, generator=gen)
    state["embed.bias"] = torch.randn(space.n_vertices, generator=gen)
    return state


def _reference_forward(trunk, state, x, subject_index):
    """The original's equations, with forward hooks on blocks.N as its FeatureExtractor."""
    captured = {}
    hooks = [
        trunk.blocks[n].register_forward_hook(lambda m, i, o, n=n: captured.__setitem__(n, o))
        for n in LAYERS
    ]
    trunk(x)
    for h in hooks:
        h.remove()
    hs = []
    for i, n in enumerate(LAYERS):
        feat = captured[n]  # (B, T, C): class token first, as the blocks return them
        y = torch.einsum(
            "btc,kt,kc->bk",
            feat,
            state[f"feat_projs.{i}.proj.weight1"],
            state[f"feat_projs.{i}.proj.weight2"],
        )
        bn = (y - state[f"feat_projs.{i}.norm.running_mean"]) / torch.sqrt(
            state[f"feat_projs.{i}.norm.running_var"] + 1e-5
        )
        hs.append(bn * state[f"feat_projs.{i}.norm.weight"] + state[f"feat_projs.{i}.norm.bias"])
    h = torch.stack(hs).mean(0)
    w, b = state["embed.weight"], state["embed.bias"]
    group = (h @ state["shared_proj.weight"].t()) @ w.t() + b
    fc = (h @ state["subj_proj.fc.weight"].t() + state["subj_proj.fc.bias"]).view(len(h), 8, L)
    subj = fc[torch.arange(len(h)), subject_index]
    return group + subj @ w.t() + b


@pytest.fixture(scope="module")
def original(tmp_path_factory, store):
    import timm

    torch.manual_seed(0)
    trunk = timm.create_model(TRUNK, pretrained=False).eval()
    gen = torch.Generator().manual_seed(1)
    state = _original_encoder_state(trunk, store.space, gen)
    folder = tmp_path_factory.mktemp("original")
    ckpt = folder / "ckpt-best.pt"
    metric = np.float64(0.209)  # the original stores a numpy scalar here
    torch.save({"epoch": 5, "metric": metric, "trunk": trunk.state_dict(), "encoder": state}, ckpt)
    pca = folder / "group_pca_d-8.pt"
    extra = torch.randn(store.space.n_vertices, 2, generator=gen)
    torch.save(
        {"weight": torch.cat([state["embed.weight"], extra], 1), "bias": state["embed.bias"]}, pca
    )
    return trunk, state, ckpt, pca


def test_imported_model_equals_the_original_forward(original, store):
    trunk, state, ckpt, pca = original
    model = import_original(ckpt, store.space, pca=pca, trunk=TRUNK, layers=LAYERS)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 3, 224, 224, generator=gen)
    names = store.space.subjects  # subj01..subj03 -> original indices 0..2
    subject = torch.tensor([0, 2, 1])
    original_index = torch.tensor([int(names[i][4:]) - 1 for i in subject])
    with torch.no_grad():
        ours = model.readout(model.trunk(x), subject)
        ref = _reference_forward(trunk, state, x, original_index)
    assert (ours - ref).abs().max().item() < 1e-4
    assert model.trunk.n_prefix == 1 and len(model.trunk.model.blocks) == LAYERS[-1] + 1


def test_import_original_cli_round_trip_and_predict(original, store, tmp_path, capsys):
    _trunk, _state, ckpt, pca = original
    out = tmp_path / "imported.safetensors"
    argv = [
        "import-original",
        str(ckpt),
        "--data",
        str(store.path),
        "--pca",
        str(pca),
        "--out",
        str(out),
        "--trunk",
        TRUNK,
        "--layers",
        *map(str, LAYERS),
    ]
    assert main(argv) == 0
    assert "grouplin readout" in capsys.readouterr().out
    model = load_encoder(out)
    direct = import_original(ckpt, store.space, trunk=TRUNK, layers=LAYERS)
    images = np.asarray(store.images[:4])
    a, b = model.predict(images, "subj02"), direct.predict(images, "subj02")
    np.testing.assert_array_equal(a["lh"], b["lh"])
    assert main(argv) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err


def test_import_original_refuses_bad_files(original, store, tmp_path):
    trunk, state, ckpt, _pca = original

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    torch.save({"encoder": state, "trunk": None, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="cannot read this checkpoint safely"):
        import_original(tmp_path / "evil.pt", store.space, trunk=TRUNK, layers=LAYERS)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        import_original(tmp_path / "nope.pt", store.space)
    bad = dict(state)
    bad["embed.weight"] = bad["embed.weight"][:-5]
    bad["embed.bias"] = bad["embed.bias"][:-5]
    torch.save({"encoder": bad, "trunk": None}, tmp_path / "small.pt")
    with pytest.raises(CheckpointError, match="predicts 295 vertices but the data's group space"):
        import_original(tmp_path / "small.pt", store.space, trunk=TRUNK, layers=LAYERS)
    torch.save({"encoder": {**state, "extra.weight": torch.zeros(1)}}, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match=r"unexpected encoder key\(s\) \['extra.weight'\]"):
        import_original(tmp_path / "extra.pt", store.space, trunk=TRUNK, layers=LAYERS)
    partial = {k: v for k, v in trunk.state_dict().items() if not k.startswith("blocks.0.")}
    torch.save({"encoder": state, "trunk": partial}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match=r"the trunk state lacks \d+ tensor.*e.g. blocks.0"):
        import_original(tmp_path / "partial.pt", store.space, trunk=TRUNK, layers=LAYERS)
    torch.save({"weight": torch.zeros(300, 8), "bias": torch.zeros(300)}, tmp_path / "pca.pt")
    with pytest.raises(CheckpointError, match="differs from the embedding stored"):
        import_original(ckpt, store.space, pca=tmp_path / "pca.pt", trunk=TRUNK, layers=LAYERS)


def test_phase1_checkpoint_takes_pretrained_trunk(original, store, tmp_path):
    from safetensors.torch import save_file

    trunk, state, _, _ = original
    torch.save(
        {"epoch": 1, "metric": np.float64(0.1), "trunk": None, "encoder": state}, tmp_path / "p1.pt"
    )
    weights = tmp_path / "trunk.safetensors"
    save_file({k: v.contiguous() for k, v in trunk.state_dict().items()}, str(weights))
    model = import_original(
        tmp_path / "p1.pt", store.space, trunk=TRUNK, layers=LAYERS, trunk_weights=weights
    )
    torch.testing.assert_close(
        model.trunk.model.blocks[0].attn.qkv.weight, trunk.blocks[0].attn.qkv.weight
    )


def test_import_original_refuses_malformed_shapes_in_one_line(original, store, tmp_path, capsys):
    """Shapes the original never writes: a CheckpointError naming the file, never a traceback."""
    trunk, state, ckpt, pca = original
    n = store.space.n_vertices
    cases = {
        "proj_1d": ({"shared_proj.weight": torch.zeros(L * K)}, r"shared_proj.weight has shape"),
        "embed_1d": ({"embed.weight": torch.zeros(n)}, r"embed.weight has shape \(300,\)"),
        "latent_0": (
            {
                "shared_proj.weight": torch.zeros(0, K),
                "subj_proj.fc.weight": torch.zeros(0, K),
                "subj_proj.fc.bias": torch.zeros(0),
                "embed.weight": torch.zeros(n, 0),
            },
            r"shared_proj.weight has shape \(0, 12\); expected 2 non-empty",
        ),
        "fc_1d": ({"subj_proj.fc.weight": torch.zeros(8 * L)}, "subj_proj.fc.weight has shape"),
        "non_string_key": ({3: torch.zeros(2)}, r"non-string key\(s\) \[3\]"),
    }
    for name, (change, match) in cases.items():
        path = tmp_path / f"{name}.pt"
        torch.save({"encoder": {**state, **change}, "trunk": trunk.state_dict()}, path)
        with pytest.raises(CheckpointError, match=match):
            import_original(path, store.space, trunk=TRUNK, layers=LAYERS)
    torch.save({"encoder": state, "trunk": {5: torch.zeros(1)}}, tmp_path / "trunk_key.pt")
    with pytest.raises(CheckpointError, match=r"'trunk' state has non-string key"):
        import_original(tmp_path / "trunk_key.pt", store.space, trunk=TRUNK, layers=LAYERS)
    weight = torch.load(pca, weights_only=True)["weight"]
    for bias in (state["embed.bias"][:-3], state["embed.bias"][:, None]):
        torch.save({"weight": weight, "bias": bias}, tmp_path / "pca_bias.pt")
        with pytest.raises(CheckpointError, match=r"pca_bias.pt: bias \(.*\) does not fit"):
            import_original(
                ckpt, store.space, pca=tmp_path / "pca_bias.pt", trunk=TRUNK, layers=LAYERS
            )
    argv = ["import-original", str(tmp_path / "embed_1d.pt"), "--data", str(store.path)]
    argv += ["--out", str(tmp_path / "m.safetensors"), "--trunk", TRUNK, "--layers", "1", "3"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "embed_1d.pt" in err
    assert not (tmp_path / "m.safetensors").exists()
