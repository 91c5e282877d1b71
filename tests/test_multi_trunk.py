"""Several trunks in one model (``model.trunks``): one readout over trunks x layers.

Two random-init trunks of different families (timm's ResNet-18 and its tiny
test ViT, the ``tiny_pair`` preset at 32 px) feed one ``point`` readout. They
train from a cache per trunk, resume, adapt, predict and submit; the model
file records every trunk and is rebuilt (on the meta device first) from its
header alone; LoRA adapts the member it names; DDP synchronizes the head.
"""

from __future__ import annotations

import json
import subprocess
import textwrap

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from brainencoder.cli.main import main
from brainencoder.data.prepare import PrepareOptions, prepare_store
from brainencoder.data.synthetic import SyntheticConfig, make_synthetic
from brainencoder.experiments.adapt import AdaptConfig, adapt
from brainencoder.inference.cache import CacheSpec, MultiFeatureCache, build_feature_cache
from brainencoder.models.encoder import create_encoder
from brainencoder.models.modelfile import load_encoder, read_model_file, save_encoder
from brainencoder.models.multi_trunk import TrunkDropout
from brainencoder.runs.load import load_model
from brainencoder.training.config import load_config
from brainencoder.training.distributed import DistInfo, SyncedBatchNorm
from brainencoder.training.loop import train
from brainencoder.training.setup import prepare_model
from brainencoder.util.errors import CheckpointError, ConfigError
from conftest import TORCHRUN_2

GROUP = ["subj01", "subj02", "subj03"]
# the tiny_pair preset at 32 px: resnet18 layer1-3 (8, 4, 2 px maps), test_vit blocks 1, 3, 5
PAIR = [
    "encoder=tiny_pair",
    "model.img_size=32",
    "model.readout.channels=8",
    "epochs=2",
    "batch_size=32",
]
MISMATCH = "weights were saved from a different model configuration"


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    """Data with a held-out subj04, the group store (subj01-03) and a trained pair run."""
    root = tmp_path_factory.mktemp("pair")
    cfg = SyntheticConfig(
        n_subjects=3, held_out=1, n_train=80, n_test=12, n_vertices=150, image_size=48
    )
    data = make_synthetic(root / "data", cfg)
    store = prepare_store(
        data, root / "store", PrepareOptions(image_size=32), subjects=GROUP, progress=False
    )
    overrides = [*PAIR, "cache_features=true", "cache_views=2", "model.trunk_dropout=0.3"]
    overrides.append(f"cache_dir={root / 'cache'}")
    train(load_config(None, overrides), store.path, root / "run")
    return data, store, root / "run", overrides


def test_config_errors_name_the_key():
    cases = [
        (["model.trunks=[{trunk: resnet18}]"], r"'model.trunks' must list 2 to 16 trunks"),
        (
            ["model.trunks=[{trunk: resnet18}, {trunk: resnet18}]"],
            r"two trunks named alike \(\['resnet18', 'resnet18'\]\); give each a 'name'",
        ),
        (
            ["model.trunks=[{trunk: resnet18}, {trunk: test_vit, depth: 2}]"],
            r"unknown key\(s\) \['model.trunks\[1\].depth'\]",
        ),
        (["model.trunks=[{layers: [0]}, {trunk: test_vit}]"], r"model.trunks\[0\]: 'trunk'"),
        (["model.trunk_dropout=0.2"], r"'model.trunk_dropout' drops whole trunks"),
        (["encoder=tiny_pair", "model.trunk_dropout=1.0"], r"must be in \[0, 1\); got 1.0"),
        (["lora={trunk: [1]}"], r"'lora.trunk' must be a trunk's name or index"),
    ]
    for overrides, match in cases:
        with pytest.raises(ConfigError, match=match):
            load_config(None, overrides).validate()


def test_one_readout_reads_every_trunks_maps_and_the_file_records_them(store, tmp_path):
    model, _ = prepare_model(load_config(None, PAIR), store, DistInfo(), torch.device("cpu"))
    assert model.trunk.names == ["resnet18", "test_vit"] and model.trunk.groups == [3, 3]
    # ResNet maps first (64, 128, 256 channels), then the ViT's (64 channels, 4 x 4 tokens)
    assert [s[0] for s in model.feature_shapes] == [64, 128, 256, 64, 64, 64]
    assert model.feature_shapes[3:] == [(64, 4, 4)] * 3
    assert model.readout.selector.shape == (store.space.n_vertices, 6)  # trunks x layers
    path = tmp_path / "m.safetensors"
    save_encoder(model, path)
    with safe_open(str(path), framework="pt") as fh:
        header = json.loads(fh.metadata()["config"])
    assert [t["trunk"] for t in header["trunks"]] == ["resnet18", "test_vit"]
    assert header["trunks"][1]["layers"] == [1, 3, 5]
    assert header["trunks"][1]["trunk_kwargs"] == {"patch_size": 8}
    loaded = load_encoder(path)
    images = np.asarray(store.images[:4])
    a, b = model.eval().predict(images, "subj02"), loaded.predict(images, "subj02")
    for h in a:  # the same weights and the same code: equal bits
        np.testing.assert_array_equal(a[h], b[h])


def _rewrite(src, dst, change):
    with safe_open(str(src), framework="pt") as fh:
        meta = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    config = json.loads(meta["config"])
    change(config)
    meta["config"] = json.dumps(config)
    save_file(tensors, str(dst), metadata=meta)
    return dst


def test_a_header_that_misdescribes_its_trunks_is_refused_before_building(store, tmp_path):
    model = create_encoder("tiny_pair", store.space, img_size=32)
    path = tmp_path / "m.safetensors"
    save_encoder(model, path)

    def layers(config):
        config["trunks"][1]["layers"] = [1, 3]

    def huge(config):  # a 632 M-parameter ViT described by a file of a few MB
        config["trunks"][1].update(trunk="vit_huge_patch14_224", layers=[0], trunk_kwargs={})

    def many(config):
        config["trunks"] = config["trunks"] * 9

    def family(config):
        config["trunks"][1]["trunk_family"] = "mine"

    cases = [
        (layers, rf"{MISMATCH} \(unexpected \['readout.reduce.5"),
        (huge, rf"{MISMATCH} \(the header's model outgrows the file"),
        (many, r"'model.trunks' must list 2 to 16 trunks; got 18"),
        (family, r"trunk family 'mine' \(registered: .*\) is not registered here"),
    ]
    for i, (change, match) in enumerate(cases):
        bad = _rewrite(path, tmp_path / f"bad{i}.safetensors", change)
        with pytest.raises(CheckpointError, match=match) as info:
            load_encoder(bad)
        assert str(info.value).startswith(f"{bad}: ") and "\n" not in str(info.value)


def test_trunk_dropout_drops_whole_trunks_per_sample_and_rescales():
    torch.manual_seed(0)
    drop = TrunkDropout([2, 1], p=0.5)
    features = [torch.ones(400, 3, 2, 2), torch.ones(400, 5, 4), torch.ones(400, 2, 3, 3)]
    out = drop.train()(features)
    first = out[0].flatten(1)
    # per sample, one trunk's maps are all kept (x 2) or all zero, across its layers
    assert set(first.unique().tolist()) <= {0.0, 2.0}
    assert torch.equal(out[0][:, 0, 0, 0], out[1][:, 0, 0])
    kept = torch.stack([out[0][:, 0, 0, 0], out[2][:, 0, 0, 0]], 1) > 0
    assert kept.any(1).all()  # every sample keeps a trunk
    assert 0.3 < kept[:, 0].float().mean() < 0.8  # dropped about half the time
    assert all(torch.equal(a, b) for a, b in zip(drop.eval()(features), features, strict=True))


def test_each_trunk_has_its_own_cache_that_a_model_of_that_trunk_alone_reuses(store, tmp_path):
    pair = create_encoder("tiny_pair", store.space, img_size=32)
    rows = np.arange(40)
    spec, root = CacheSpec(n_views=2, seed=3), tmp_path / "cache"
    cache = build_feature_cache(pair, store, rows, spec, root=root)
    assert isinstance(cache, MultiFeatureCache) and len(cache.caches) == 2
    assert sorted(p.name for p in root.iterdir()) == sorted(c.path.name for c in cache.caches)
    images = pair.prepare_images(np.asarray(store.images[:5]))
    with torch.no_grad():
        direct = pair.eval().forward_features(images)
    cached = cache.get(np.zeros(5, np.int64), cache.lookup(np.arange(5)))
    for a, b in zip(cached, direct, strict=True):
        # float16 storage: 2**-10 relative, on features of size up to about 10
        torch.testing.assert_close(a, b, rtol=2e-3, atol=2e-2)
    alone = create_encoder("tiny", store.space, img_size=32)
    alone.trunk.load_state_dict(pair.trunk.members[0].state_dict())
    again = build_feature_cache(alone, store, rows, spec, root=root)
    assert again.path == cache.caches[0].path and len(list(root.iterdir())) == 2


def test_two_trunks_train_resume_adapt_predict_and_submit(group, tmp_path):
    data, store, run, overrides = group
    part = tmp_path / "part"
    assert train(load_config(None, overrides), store.path, part, stop_after_steps=9) == {
        "stopped_at_step": 9
    }
    train(load_config(None, overrides), store.path, part, resume=True)
    a, b = (
        read_model_file(run / "best.safetensors")[0],
        read_model_file(part / "best.safetensors")[0],
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "resume differs"
    summary = adapt(run, data, "subj04", tmp_path / "ad", n_images=40, config=AdaptConfig(epochs=3))
    assert summary["finished"] and summary["added_vertices"] > 0
    before, after = load_model(run), load_model(tmp_path / "ad")
    images = np.asarray(store.images[:4])
    for h, value in before.predict(images, "subj01").items():
        np.testing.assert_array_equal(value, after.predict(images, "subj01")[h])
    test_images = str(data / "subj04" / "test_split" / "test_images")
    out = tmp_path / "p.npz"
    assert (
        main(
            ["predict", str(tmp_path / "ad"), test_images, "--subject", "subj04", "--out", str(out)]
        )
        == 0
    )
    with np.load(out) as pred:
        assert np.isfinite(pred["lh"]).all() and pred["lh"].shape[0] == 12
    zip_path = tmp_path / "s.zip"
    assert main(["submit", str(tmp_path / "ad"), "--data", str(data), "--out", str(zip_path)]) == 0
    assert zip_path.stat().st_size > 0


def test_lora_adapts_the_named_trunk_only_and_resumes(group, tmp_path):
    _, store, _, _ = group
    lora = [*PAIR, "epochs=1", "train_fraction=0.5", "lora={rank: 2, trunk: test_vit}", "lr=1e-3"]
    full, part = tmp_path / "full", tmp_path / "part"
    summary = train(load_config(None, lora), store.path, full)
    assert summary["trainable_parameters"] > 0
    assert train(load_config(None, lora), store.path, part, stop_after_steps=2) == {
        "stopped_at_step": 2
    }
    ckpt = next((part / "checkpoints").glob("step-*")) / "model.safetensors"
    _, meta = read_model_file(ckpt)
    targets = json.loads(meta["lora"])["targets"]
    assert targets and all(t.startswith("members.1.model.") for t in targets), targets
    train(load_config(None, lora), store.path, part, resume=True)
    a, b = read_model_file(full / "best.safetensors"), read_model_file(part / "best.safetensors")
    assert "lora" not in a[1] and not any("lora_" in k for k in a[0])  # merged
    assert all(torch.equal(a[0][k], b[0][k]) for k in a[0]), "resume differs"
    initial, _ = prepare_model(load_config(None, PAIR), store, DistInfo(), torch.device("cpu"))
    changed = [
        k
        for k, v in initial.state_dict().items()
        if k.startswith("trunk.") and not torch.equal(v, a[0][f"model.{k}"])
    ]
    assert changed and all(k.startswith("trunk.members.1.model.blocks.") for k in changed)
    with pytest.raises(ConfigError, match=r"no trunk 'nope' in this model; its trunks are"):
        prepare_model(
            load_config(None, [*PAIR, "lora={trunk: nope}"]), store, DistInfo(), torch.device("cpu")
        )
    with pytest.raises(ConfigError, match=r"'lora.trunk' names one of model.trunks"):
        single = ["model.img_size=32", "model.readout.latent_dim=4", "lora={trunk: resnet18}"]
        prepare_model(load_config(None, single), store, DistInfo(), torch.device("cpu"))


_DDP_SCRIPT = """
import json, sys
from brainencoder.training.config import load_config
from brainencoder.training.loop import train

job = json.loads(sys.argv[1])
train(load_config(None, job["overrides"]), job["store"], job["out"], resume=job["resume"],
      stop_after_steps=job["stop"])
"""


def test_every_batchnorm_of_the_pair_head_is_synchronized_under_ddp(store):
    """prepare_model under DDP (in one process) syncs each of point's six BatchNorm2d."""
    config = load_config(None, PAIR)
    synced, _ = prepare_model(config, store, DistInfo(0, 2, 0), torch.device("cpu"))
    norms = [m for m in synced.readout.modules() if isinstance(m, SyncedBatchNorm)]
    assert len(norms) == 6


@pytest.mark.slow
def test_the_pair_trains_and_resumes_under_torchrun(store, tmp_path):
    """Two gloo processes train the pair from per-trunk caches; --resume continues exactly."""
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(_DDP_SCRIPT))
    overrides = [*PAIR, "cache_features=true", f"cache_dir={tmp_path / 'c'}"]
    overrides.append("model.readout.dropout=0.0")  # rank 0's RNG state alone is checkpointed

    def run(out, resume=False, stop=None):
        job = {"overrides": overrides, "store": str(store.path), "out": str(out)}
        job.update(resume=resume, stop=stop)
        result = subprocess.run(
            [*TORCHRUN_2, str(script), json.dumps(job)], capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stderr[-3000:]

    run(tmp_path / "full")
    run(tmp_path / "part", stop=5)
    run(tmp_path / "part", resume=True)
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert summary["world_size"] == 2
    a = read_model_file(tmp_path / "full" / "best.safetensors")[0]
    b = read_model_file(tmp_path / "part" / "best.safetensors")[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert len(list((tmp_path / "c").iterdir())) == 2  # one cache per trunk
