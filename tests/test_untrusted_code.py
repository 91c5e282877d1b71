"""Nothing is run from what others send: plugins, Hugging Face folders and model headers.

A tool run inside an unpacked download imports none of its files but the
plugin the user names; a Hugging Face folder whose config ships code
(``auto_map``) is refused without a prompt; a model header is rebuilt from
what it holds, never from the folder it names; and every malformed or
oversized value of a folder or header is a one-line error naming the file,
before anything is allocated.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from brainencoder.models.encoder import Encoder, EncoderConfig, create_encoder
from brainencoder.models.hf_trunk import hf_trunk
from brainencoder.models.modelfile import save_encoder
from brainencoder.models.trunk import Trunk
from brainencoder.util.errors import ConfigError
from brainencoder.util.plugins import load_plugins

transformers = pytest.importorskip("transformers")

SIZE, PATCH, WIDTH = 56, 14, 32
TOWER = {
    "hidden_size": WIDTH,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "mlp_ratio": 2,
    "image_size": SIZE,
    "patch_size": PATCH,
}
# a module that records that it ran (the test then checks the record is absent)
MARKER_MODULE = """
import os, pathlib
pathlib.Path(os.environ["BE_MARKER_DIR"], {name!r}).write_text("ran")
"""


@pytest.fixture(scope="module")
def dinov2_dir(tmp_path_factory):
    """A random-init DINOv2 folder, as save_pretrained writes it (read-only: copy to edit)."""
    folder = tmp_path_factory.mktemp("hf") / "dinov2"
    torch.manual_seed(0)
    transformers.Dinov2Model(transformers.Dinov2Config(**TOWER)).save_pretrained(folder)
    return folder


@pytest.fixture
def markers(tmp_path, monkeypatch):
    """The folder where marker modules record that they ran."""
    folder = tmp_path / "markers"
    folder.mkdir()
    monkeypatch.setenv("BE_MARKER_DIR", str(folder))
    return folder


def _copy(folder, tmp_path, config=None, processor=None):
    """A copy of ``folder`` with config.json / preprocessor_config.json keys replaced."""
    out = shutil.copytree(folder, tmp_path / "model")
    if config is not None:
        data = json.loads((out / "config.json").read_text())
        (out / "config.json").write_text(json.dumps({**data, **config}))
    if processor is not None:
        (out / "preprocessor_config.json").write_text(json.dumps(processor))
    return out


def _header_kwargs(dinov2_dir):
    """What a model header holds for the trunk of ``dinov2_dir`` (its trunk_kwargs)."""
    return dict(Trunk(f"hf:{dinov2_dir}", layers=[0]).model_kwargs)


# -- plugins ---------------------------------------------------------------------------


def test_a_plugin_in_a_downloaded_folder_shadows_no_installed_module(
    store, synth_root, tmp_path, markers
):
    model = tmp_path / "model.safetensors"
    save_encoder(create_encoder("tiny", store.space, img_size=32), model)
    download = tmp_path / "download"
    download.mkdir()
    for name in ("safetensors", "timm", "pandas", "yaml"):  # imported lazily by brainencoder
        (download / f"{name}.py").write_text(MARKER_MODULE.format(name=name))
    (download / "be_plugin_downloaded.py").write_text(MARKER_MODULE.format(name="plugin"))
    launcher = tmp_path / "bin" / "be_launch.py"  # as the console script: cwd not on sys.path
    launcher.parent.mkdir()
    launcher.write_text("import sys\nfrom brainencoder.cli.main import main\nsys.exit(main())\n")
    images = synth_root / "subj01" / "test_split" / "test_images"
    out = tmp_path / "pred.npz"
    argv = ["predict", str(model), str(images), "--subject", "subj01", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, str(launcher), *argv, "--plugin", "be_plugin_downloaded"],
        cwd=download,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in markers.iterdir()) == ["plugin"]  # the plugin ran, alone
    assert out.is_file()


def test_a_plugin_package_loads_from_the_working_folder_without_it_on_sys_path(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    package = tmp_path / "be_plugin_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "readouts.py").write_text("from be_plugin_pkg import helper\nVALUE = helper.X\n")
    (package / "helper.py").write_text("X = 7\n")
    before = list(sys.path)
    try:
        (module,) = load_plugins(["be_plugin_pkg.readouts"])
        assert module.VALUE == 7
    finally:
        for name in [n for n in sys.modules if n.startswith("be_plugin_pkg")]:
            del sys.modules[name]
    assert sys.path == before  # nothing else in the folder became importable
    (tmp_path / "be_plugin_fails.py").write_text("raise RuntimeError('broken on purpose')\n")
    with pytest.raises(
        ConfigError,
        match=r"^plugin 'be_plugin_fails' could not be imported "
        r"\(RuntimeError: broken on purpose\)$",
    ):
        load_plugins(["be_plugin_fails"])
    assert "be_plugin_fails" not in sys.modules and sys.path == before


# -- custom code in a Hugging Face folder or cache --------------------------------------


@pytest.mark.parametrize("model_type", ["be_custom_vit", "dinov2"])
def test_a_folder_whose_config_ships_code_is_refused_without_a_prompt(
    dinov2_dir, tmp_path, markers, monkeypatch, model_type
):
    auto_map = {"AutoConfig": "custom.CustomConfig", "AutoModel": "custom.CustomModel"}
    folder = _copy(dinov2_dir, tmp_path, {"model_type": model_type, "auto_map": auto_map})
    (folder / "custom.py").write_text(MARKER_MODULE.format(name="custom"))
    asked = []

    def no_prompt(*args):
        asked.append(args)
        raise EOFError  # stdin closed

    monkeypatch.setattr(builtins, "input", no_prompt)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    for pretrained in (False, True):
        with pytest.raises(
            ConfigError,
            match=r"model/config.json: the model ships its own code \(auto_map\), and custom "
            r"code is never run here; use a DINOv2, CLIP or SigLIP model",
        ) as info:
            Trunk(f"hf:{folder}", layers=[0], pretrained=pretrained)
        assert "\n" not in str(info.value)
    assert not asked and not list(markers.iterdir())


def test_a_cached_hub_model_whose_config_ships_code_is_refused(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--be--custom"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    config = {"model_type": "be_custom", "auto_map": {"AutoConfig": "x.Y"}}
    (repo / "snapshots" / "abc123" / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(builtins, "input", lambda *a: pytest.fail("prompted"))
    with pytest.raises(ConfigError, match=r"abc123/config.json: the model ships its own code"):
        Trunk("hf:be/custom", layers=[0])


# -- a model header is rebuilt from what it holds ---------------------------------------


def test_a_header_without_the_trunk_config_is_refused_and_the_folder_never_read(
    dinov2_dir, tmp_path, markers, monkeypatch
):
    header = _header_kwargs(dinov2_dir)
    folder = _copy(dinov2_dir, tmp_path, {"auto_map": {"AutoModel": "custom.M"}})
    (folder / "custom.py").write_text(MARKER_MODULE.format(name="custom"))
    monkeypatch.setattr(builtins, "input", lambda *a: pytest.fail("prompted"))
    monkeypatch.chdir(tmp_path)
    without = {k: v for k, v in header.items() if k != "config"}
    with pytest.raises(
        ConfigError,
        match=r"^the model header: no Hugging Face config \(trunk_kwargs.config\) for trunk "
        r"'./model'; a model file is rebuilt from its header alone and the folder it names "
        r"is never read: use a model file written by brainencoder, or train the model again$",
    ):
        Trunk("hf:./model", layers=[0], from_header=True, **without)
    with pytest.raises(ConfigError, match=r"takes its weights from the file"):
        Trunk("hf:./model", layers=[0], pretrained=True, from_header=True, **header)
    shutil.rmtree(folder)  # the header's config is all it takes
    trunk = Trunk("hf:./model", layers=[0], from_header=True, **header)
    assert trunk.input_size == SIZE and "from_header" not in trunk.model_kwargs
    assert not list(markers.iterdir())


def test_an_encoder_config_marked_from_header_reads_no_folder(dinov2_dir, store, tmp_path):
    # load_encoder marks the header's config so (trunk_kwargs["from_header"] = True); the
    # mark binds to Trunk's from_header and is not kept in the rebuilt config
    header = _header_kwargs(dinov2_dir)
    missing = tmp_path / "gone"

    def config(kwargs):
        readout = {"name": "grouplin_seq", "hidden_dim": 8, "latent_dim": 4}
        trunk_kwargs = {**kwargs, "from_header": True}
        return EncoderConfig(
            trunk=f"hf:{missing}", layers=[0], pretrained=False, readout=readout,
            trunk_kwargs=trunk_kwargs,
        )  # fmt: skip

    without = {k: v for k, v in header.items() if k != "config"}
    with pytest.raises(ConfigError, match=r"^the model header: no Hugging Face config"):
        Encoder(config(without), store.space)
    model = Encoder(config(header), store.space)
    assert "from_header" not in model.config.trunk_kwargs
    assert model.config.trunk_kwargs["config"] == header["config"]


# -- malformed or oversized values ------------------------------------------------------


@pytest.mark.parametrize(
    ("processor", "config", "message"),
    [
        (
            {"image_mean": 0.5},
            None,
            r"model/preprocessor_config.json: image_mean must be 3 finite numbers, one per RGB "
            r"channel; got 0.5: write it as a list such as \[0.5, 0.5, 0.5\]",
        ),
        (
            {"image_mean": [0.5, 0.5, 0.5, 0.5]},
            None,
            r"preprocessor_config.json: image_mean must be 3 finite numbers, .* got \[0.5, 0.5,",
        ),
        (
            {"image_std": "0.5"},
            None,
            r"preprocessor_config.json: image_std must be 3 finite numbers > 0, .* got '0.5'",
        ),
        (
            [["image_mean", [0.5, 0.5, 0.5]]],
            None,
            r"model/preprocessor_config.json: a preprocessor config is a JSON object of "
            r"settings, not a list; replace it with one written by save_pretrained",
        ),
        (
            {"crop_size": {"height": 200000, "width": 200000}},
            None,
            r"preprocessor_config.json: crop_size.height must be an image side of 8 to 1024 "
            r"pixels; got 200000: set it to the input size the model was trained at",
        ),
        (
            None,
            {"image_size": 5000},
            r"model/config.json: image_size must be an image side of 8 to 1024 pixels; got 5000",
        ),
        (
            None,
            {"hidden_size": 4096, "num_hidden_layers": 1000, "num_attention_heads": 16},
            r"model/config.json: the architecture has about \d\.\de\+11 parameters \(hidden_size "
            r"4096, 1000 layers, image_size 56\), more than the 4e\+09 of the largest",
        ),
    ],
    ids=["scalar-mean", "4-value-mean", "string-std", "json-list", "crop-2e5", "image-5000",
         "1e11-parameters"],
)  # fmt: skip
def test_bad_folder_values_are_one_line_errors_naming_the_file(
    dinov2_dir, tmp_path, processor, config, message
):
    folder = _copy(dinov2_dir, tmp_path, config, processor)
    with pytest.raises(ConfigError, match=message) as info:
        Trunk(f"hf:{folder}", layers=[0])
    assert "\n" not in str(info.value)


def test_pickled_weights_are_refused_without_running_them(dinov2_dir, tmp_path, markers):
    folder = _copy(dinov2_dir, tmp_path)
    state = transformers.Dinov2Model.from_pretrained(folder).state_dict()
    (folder / "model.safetensors").unlink()

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {markers / 'pickle'}",))

    torch.save({**state, "payload": Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(
        ConfigError,
        match=r"model/pytorch_model.bin: cannot read these weights safely \(.*GLOBAL "
        r"posix.system.*\); only tensors are read \(weights_only\), nothing is executed: "
        r"save the model with save_pretrained \(model.safetensors\)$",
    ) as info:
        Trunk(f"hf:{folder}", layers=[0], pretrained=True)
    assert "\n" not in str(info.value) and not list(markers.iterdir())


def test_truncated_weights_are_a_one_line_error(dinov2_dir, tmp_path):
    folder = _copy(dinov2_dir, tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(
        ConfigError,
        match=r"cannot load the weights of Hugging Face trunk .*model' from .*model \(Error while "
        r"deserializing header: .*\); write the model's weights there with save_pretrained",
    ) as info:
        Trunk(f"hf:{folder}", layers=[0], pretrained=True)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mean": 0.5}, r"^the model header: trunk_kwargs.mean must be 3 finite numbers"),
        ({"std": [1, 1, 0]}, r"^the model header: trunk_kwargs.std must be 3 finite numbers > 0"),
        (
            {"input_size": 200000},
            r"^the model header: trunk_kwargs.input_size must be an image side of 8 to 1024",
        ),
        ({"config": [1, 2]}, r"^the model header: trunk_kwargs.config must be a mapping"),
        ({"config": {"model_type": None}}, r"^the model header: trunk_kwargs.config is a None"),
        ({"patch_size": 0}, r"^the model header: patch_size must be an integer in \[1, 56\]"),
        (
            {"num_hidden_layers": 10**6},
            r"^the model header: num_hidden_layers must be an integer in \[1, 1024\]",
        ),
        ({"to_dict": 1}, r"^'trunk_kwargs.to_dict' is not a setting of the dinov2 config"),
    ],
    ids=["scalar-mean", "zero-std", "input-2e5", "config-list", "config-no-type", "patch-0",
         "1e6-layers", "method-override"],
)  # fmt: skip
def test_bad_header_values_are_one_line_errors(dinov2_dir, tmp_path, change, message):
    header = {**_header_kwargs(dinov2_dir), **change}
    with pytest.raises(ConfigError, match=message) as info:
        hf_trunk(str(tmp_path / "gone"), from_header=True, **header)
    assert "\n" not in str(info.value)


def test_a_crop_size_beyond_the_limit_is_refused_before_the_dry_run(dinov2_dir, store, tmp_path):
    folder = _copy(dinov2_dir, tmp_path, processor={"crop_size": 1025})
    with pytest.raises(ConfigError, match=r"crop_size must be an image side of 8 to 1024"):
        create_encoder("tiny", store.space, trunk=f"hf:{folder}", layers=[0], img_size=None)
    with pytest.raises(ConfigError, match=r"^model.img_size: the input size must be an image"):
        Trunk(f"hf:{dinov2_dir}", layers=[0], img_size=9000)
    with pytest.raises(ConfigError, match=r"input size 8 is smaller than the trunk's patch"):
        create_encoder("tiny", store.space, trunk=f"hf:{dinov2_dir}", layers=[0], img_size=8)
