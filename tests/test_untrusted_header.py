"""A model file's header is checked before anything is built from it.

Each test writes a tiny valid model file, rewrites its header (or one of its
group-space arrays) keeping the rest, and loads it: a one-line CheckpointError
naming the file, with nothing large allocated on a real device on the way
(:func:`_nothing_large_built` fails a build that allocates more than 16 MiB of
parameters and buffers off the ``meta`` device; a valid file's model takes 1.5 MB).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from brainencoder.core.regions import RegionLabels
from brainencoder.core.space import GroupSpace
from brainencoder.models.encoder import EncoderConfig, build_encoder, create_encoder
from brainencoder.models.lora import LoRAConfig, apply_lora
from brainencoder.models.modelfile import load_encoder, save_encoder
from brainencoder.models.readouts import ReadoutContext, validate_readout_config
from brainencoder.util.errors import CheckpointError, ConfigError

READOUTS = {
    "grouplin": {"name": "grouplin", "hidden_dim": 8, "latent_dim": 4},
    "grouplin_seq": {"name": "grouplin_seq", "hidden_dim": 8, "latent_dim": 4},
    "point": {"name": "point", "channels": 4},
    "roi_query": {"name": "roi_query", "dim": 8, "heads": 2},
}


def _space() -> GroupSpace:
    rng = np.random.default_rng(0)
    masks = {s: {h: rng.random(50) < 0.6 for h in ("lh", "rh")} for s in ("subj01", "subj02")}
    return GroupSpace.from_masks(masks)


def _save(path: Path, readout: str, lora: bool = False) -> Path:
    """A tiny model file: test_vit's first two blocks at 32 px and ``readout``."""
    torch.manual_seed(0)
    space = _space()
    config = EncoderConfig(
        trunk="test_vit", layers=[1], pretrained=False, img_size=32, readout=READOUTS[readout]
    )
    labels = np.arange(space.n_vertices) % 3
    model = build_encoder(config, space, ReadoutContext(regions=RegionLabels(labels, ["A", "B"])))
    if lora:
        model.lora_config = LoRAConfig(rank=2)
        apply_lora(model.trunk.model, model.lora_config)
    save_encoder(model, path, {"store_image_size": "32"}, merge_lora=not lora)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    out = {name: _save(root / f"{name}.safetensors", name) for name in READOUTS}
    out["lora"] = _save(root / "lora.safetensors", "grouplin_seq", lora=True)
    return out


def _rewrite(
    src: Path,
    dst: Path,
    config: Callable[[dict], None] | None = None,
    meta: dict[str, str] | None = None,
    tensors: Callable[[dict], None] | None = None,
) -> Path:
    """``src`` with its config, metadata or tensors changed in place, written to ``dst``."""
    with safe_open(str(src), framework="pt") as fh:
        header = dict(fh.metadata())
        stored = {k: fh.get_tensor(k) for k in fh.keys()}
    if config is not None:
        value = json.loads(header["config"])
        config(value)
        header["config"] = json.dumps(value)
    header.update(meta or {})
    if tensors is not None:
        tensors(stored)
    save_file(stored, str(dst), metadata=header)
    return dst


@contextlib.contextmanager
def _nothing_large_built(limit: int = 16 << 20) -> Iterator[None]:
    """Fail as soon as modules register more than ``limit`` bytes off the meta device."""
    from torch.nn.modules import module as hooks

    total = [0]

    def count(module: torch.nn.Module, name: str, value: object) -> None:
        if isinstance(value, torch.Tensor) and value.device.type != "meta":
            total[0] += value.numel() * value.element_size()
            if total[0] > limit:
                raise AssertionError(f"{total[0]} bytes allocated building {name!r}")

    handles = [
        hooks.register_module_parameter_registration_hook(count),
        hooks.register_module_buffer_registration_hook(count),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
    assert total[0] <= limit


def _refused(path: Path, match: str) -> str:
    """Load ``path`` expecting a one-line CheckpointError naming it; nothing large is built."""
    with _nothing_large_built(), pytest.raises(CheckpointError, match=match) as info:
        load_encoder(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and "\n" not in text
    return text


def _set(section: str, **values: object) -> Callable[[dict], None]:
    return lambda config: (config if section == "" else config[section]).update(values)


MISMATCH = "weights were saved from a different model configuration"
OUTGROWS = rf"{MISMATCH} \(the header's model outgrows the file: building it registers over"


@pytest.mark.parametrize(
    ("source", "change", "match"),
    [
        ("grouplin_seq", _set("readout", hidden_dim=600000), f"{MISMATCH} .*shape mismatch"),
        ("grouplin", _set("readout", hidden_dim=600000), f"{MISMATCH} .*shape mismatch"),
        ("point", _set("readout", channels=10**6), OUTGROWS),
        ("roi_query", _set("readout", queries_per_region=10**6), OUTGROWS),
        ("grouplin_seq", _set("trunk_kwargs", embed_dim=60000), OUTGROWS),
        ("grouplin_seq", _set("trunk_kwargs", depth=100000), OUTGROWS),
        ("lora", None, OUTGROWS),  # with the header's LoRA rank 10**6
        ("grouplin", _set("readout", latent_dim=10**6), "unusable model config .*exceeds the"),
    ],
    ids=[
        "hidden_dim",
        "grouplin-hidden_dim",
        "point-channels",
        "roi-queries",
        "embed_dim",
        "depth",
        "lora-rank",
        "latent_dim",
    ],
)
def test_a_header_describing_a_huge_model_is_refused_before_anything_is_built(
    files, tmp_path, source, change, match
):
    """The model the header describes is built on the meta device and compared with the
    file's tensors first: a huge readout, trunk or LoRA rank is refused at once."""
    meta = {"lora": json.dumps({"rank": 10**6})} if source == "lora" else None
    bad = _rewrite(files[source], tmp_path / "bad.safetensors", change, meta)
    _refused(bad, match)
    with _nothing_large_built():
        assert load_encoder(files[source]).subjects == ["subj01", "subj02"]  # the original loads


def test_image_settings_share_the_config_rules(files, tmp_path):
    """Image size, normalisation and a trunk's counts: one rule for configs and headers."""
    space, small = _space(), {"hidden_dim": 8, "latent_dim": 4}
    with pytest.raises(ConfigError, match=r"'model.img_size' must be in \[8, 1024\]; got 1100"):
        create_encoder("tiny", space, img_size=1100, readout=small)
    with pytest.raises(ConfigError, match=r"'model.trunk_kwargs.std' must be 3 finite numbers > 0"):
        create_encoder("tiny", space, trunk_kwargs={"std": [0, 0, 0]}, readout=small)
    with pytest.raises(ConfigError, match=r"'model.trunk_kwargs.depth' must be in \[-1048576, "):
        create_encoder("tiny", space, trunk_kwargs={"depth": 10**9}, readout=small)
    with pytest.raises(ConfigError, match=r"'depth' must be in \[1, 64\]; got 1000000"):
        validate_readout_config({"name": "roi_query", "depth": 10**6})
    src, bad = files["grouplin_seq"], tmp_path / "bad.safetensors"
    _refused(_rewrite(src, bad, _set("", img_size=1100)), r"'model.img_size' must be in \[8, 1")
    _refused(
        _rewrite(src, bad, _set("trunk_kwargs", mean=[0.5] * 4)),
        r"unusable model config \('model.trunk_kwargs.mean' must be 3 finite numbers; got \[0.5",
    )
    for size in ("99999", "9" * 5000, "x"):
        _refused(
            _rewrite(src, bad, meta={"store_image_size": size}),
            r"'store_image_size' must be an image side in \[16, 1024\]",
        )


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda c: c["trunk_kwargs"]["config"].update(hidden_size=60000), f"({MISMATCH}|unusable)"),
        (_set("trunk_kwargs", std=[0, 0, 0]), r"'model.trunk_kwargs.std' must be 3 finite num"),
        (_set("trunk_kwargs", input_size=4096), r"'model.trunk_kwargs.input_size' must be in"),
    ],
    ids=["hidden_size", "std", "input_size"],
)
def test_hugging_face_headers_are_checked_the_same_way(tmp_path, change, match):
    """An ``hf`` model file holds its architecture and normalisation in ``trunk_kwargs``:
    a hidden size of 60000 is refused before building it, ``std: [0, 0, 0]`` (which
    predicted all-NaN) and an input size beyond 1024 px are refused by the config rules."""
    transformers = pytest.importorskip("transformers")
    config = transformers.Dinov2Config(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=28,
        patch_size=14,
    )
    transformers.Dinov2Model(config).save_pretrained(tmp_path / "dinov2")
    model = create_encoder(
        "tiny",
        _space(),
        trunk=f"hf:{tmp_path / 'dinov2'}",
        layers=[1],
        img_size=28,
        readout={"hidden_dim": 8, "latent_dim": 4},
    )
    save_encoder(model, tmp_path / "m.safetensors")
    _refused(_rewrite(tmp_path / "m.safetensors", tmp_path / "bad.safetensors", change), match)


def _columns(value: np.ndarray) -> Callable[[dict], None]:
    return lambda t: t.update({"space.columns.subj01.lh": torch.from_numpy(value)})


@pytest.mark.parametrize(
    ("meta", "tensors", "match"),
    [
        ({"subjects": '["subj01", "subj01"]'}, None, "damaged model header .*named twice"),
        ({"subjects": '"subj01"'}, None, "'subjects' must be a list of 1 to 1024 subject names"),
        ({"subjects": "[1, 2]"}, None, r"subject name 1 is not valid"),
        ({"subjects": json.dumps([f"s{i}" for i in range(2000)])}, None, "list of 1 to 1024"),
        ({"subjects": '["subj01", "subj03"]'}, None, r"damaged group space \(missing \['space"),
        ({"subjects": '["subj01"]'}, None, r"unexpected \['space.columns.subj02.lh'"),
        (None, _columns(np.array([0, 10**6])), r"subject's columns are not increasing group ind"),
        (None, _columns(np.array([3, 2])), "subject's columns are not increasing"),
        (None, _columns(np.zeros((2, 2), np.int64)), r"columns.subj01.lh is I64 of shape \(2, 2\)"),
        (None, _columns(np.zeros(3, np.float32)), "columns.subj01.lh is F32 of shape"),
        (
            None,
            lambda t: t.update({"space.n_fsaverage.rh": torch.tensor([10**12])}),
            r"rh mesh of 1000000000000 vertices \(at most 1048576\)",
        ),
        ({"config": "[" * 100000}, None, r"damaged model header \('config' is not JSON"),
        ({"config": "[" * 40 + "]" * 40}, None, r"'config' nests deeper than 32 levels"),
    ],
    ids=[
        "duplicate",
        "string",
        "ints",
        "too-many",
        "renamed",
        "dropped",
        "column-range",
        "column-order",
        "column-2d",
        "column-float",
        "mesh-size",
        "not-json",
        "nesting",
    ],
)
def test_subjects_group_space_and_json_values_are_one_line_errors(
    files, tmp_path, meta, tensors, match
):
    """Subjects are unique names matching the space's arrays; the arrays are int64 vectors
    of increasing indices within their mesh and hemisphere; the JSON is bounded."""
    bad = _rewrite(files["grouplin_seq"], tmp_path / "bad.safetensors", None, meta, tensors)
    text = _refused(bad, match)
    assert "the file is damaged or was edited" in text


def test_loaded_region_labels_out_of_range_name_the_file(files, tmp_path):
    """roi_query's region labels are checked when they are loaded: a CheckpointError."""
    bad = _rewrite(
        files["roi_query"],
        tmp_path / "bad.safetensors",
        tensors=lambda t: t["model.readout.region"].fill_(7),
    )
    _refused(bad, "region labels run from 7 to 7, but it has 2 regions")


def test_big_headers_and_malformed_format_1_files_are_refused(files, tmp_path):
    """A header over 16 MiB is not read; a format-1 file's config must be a mapping with
    the old head's keys and its stacked subject maps one row per subject."""
    src = files["grouplin_seq"]
    big = _rewrite(src, tmp_path / "big.safetensors", meta={"notes": "x" * (17 << 20)})
    _refused(big, "a safetensors header of .* bytes, over 16 MiB; not a brainencoder model")
    v1 = {"format_version": "1"}
    _refused(
        _rewrite(src, tmp_path / "v1.safetensors", meta={**v1, "config": '"abc"'}),
        r"damaged format-1 model file \(its config needs \['hidden_dim'",
    )

    def stack(t: dict) -> None:  # format 1's head, with one subject's row missing
        t["model.head.subject.weight"] = t.pop("model.readout.per_subject.subj01.weight")[None]

    config = json.loads(_header(src)["config"])
    old = {k: config["readout"][k] for k in ("hidden_dim", "latent_dim", "dropout")}
    _refused(
        _rewrite(src, tmp_path / "v1.safetensors", _set("", **old), v1, stack),
        r"model.head.subject.weight has shape \(1, 4, 4\), not one row for each of its 2 subj",
    )


def _header(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata())
