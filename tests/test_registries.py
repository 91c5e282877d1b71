"""One idea, one place: model kinds, encoder presets, ridge solvers, trunk families, API names.

Each is decided by one registry or one list that every user reads: a run's
model kind (file name, folder kind, header format, saver and loader), the
encoder presets ``encoder: NAME`` picks (a plugin adds its own), the ridge
solvers ``baseline --solver`` accepts (a plugin's too), the trunk families
``be.list_trunks`` lists and the public API's names. And the package's
modules import each other without a cycle.
"""

from __future__ import annotations

import ast
import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import brainencoder
import brainencoder.api
from brainencoder.cli.main import main
from brainencoder.models.encoder import EncoderConfig, create_encoder, preset_config
from brainencoder.models.modelfile import load_encoder, read_metadata, save_encoder
from brainencoder.models.presets import ENCODERS, register_encoder
from brainencoder.models.ridge import RidgeModel
from brainencoder.models.solvers import RIDGE_SOLVERS
from brainencoder.models.trunk import TRUNK_FAMILIES, list_trunk_names
from brainencoder.runs.kinds import (
    MODEL_KINDS,
    ModelKind,
    kind_in_folder,
    kind_of_file,
    kind_of_model,
)
from brainencoder.runs.load import load_model
from brainencoder.runs.run import Run
from brainencoder.util.errors import CheckpointError, ConfigError
from conftest import TINY_TRAIN

PACKAGE = Path(brainencoder.__file__).resolve().parent
REGISTRIES = (ENCODERS, RIDGE_SOLVERS, TRUNK_FAMILIES, MODEL_KINDS)


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A folder on sys.path for plugin modules; what they register is removed afterwards."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    before = [set(r.names()) for r in REGISTRIES]
    yield folder
    for registry, names in zip(REGISTRIES, before, strict=True):
        for name in set(registry.names()) - names:
            registry.unregister(name)
    for name in [n for n in sys.modules if n.startswith("be_registries_")]:
        del sys.modules[name]


def _write(folder: Path, name: str, source: str) -> None:
    (folder / f"{name}.py").write_text(textwrap.dedent(source))


# ---------------------------------------------------------------------------- import graph
def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(["brainencoder", *parts])] = path
    return out


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, but those under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (at import time or in a function).

    An import of one of the module's own packages (``from .. import x``) is
    left out: a package is imported before its modules, so it never runs
    because of them; the package's own imports of its modules are edges.
    """
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        ancestors = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
        edges: set[str] = set()
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [(a.name, []) for a in node.names]
            elif node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join([*base, *([node.module] if node.module else [])])
                targets = [(name, [a.name for a in node.names])]
            else:
                targets = [(node.module or "", [a.name for a in node.names])]
            for target, names in targets:
                edges |= {target} | {f"{target}.{n}" for n in names}
        graph[module] = {e for e in edges if e in modules and e != module and e not in ancestors}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert "brainencoder.runs.stores" in graph["brainencoder.runs.run"]  # the reader reads
    assert not _cycles(graph), "modules importing each other:\n" + "\n".join(
        " <-> ".join(c) for c in _cycles(graph)
    )


def test_the_cycle_check_sees_a_cycle():
    """Lazy imports count; imports under ``if TYPE_CHECKING:`` do not."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    tree = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x\n"
        "def f():\n    import y\n"
    )
    found = [getattr(n, "module", None) or n.names[0].name for n in _runtime_imports(tree)]
    assert found == ["typing", "y"]


# ---------------------------------------------------------------------------- model kinds
class ToyModel:
    """A model of a kind a plugin might register: one number."""

    def __init__(self, value: float) -> None:
        self.value = value


def _save_toy(model: ToyModel, path: Path, metadata: dict[str, str]) -> None:
    save_file({"value": torch.tensor([model.value])}, str(path), {"format": "toy", **metadata})


def _load_toy(path: Path) -> ToyModel:
    from safetensors.torch import load_file

    return ToyModel(float(load_file(str(path))["value"][0]))


def test_the_built_in_model_kinds():
    assert MODEL_KINDS.names() == ["encoder", "ridge"]
    encoder, ridge = MODEL_KINDS.get("encoder"), MODEL_KINDS.get("ridge")
    assert (encoder.file_name, encoder.owner, encoder.file_format) == (
        "best.safetensors",
        "run",
        "brainencoder-model",
    )
    assert (ridge.file_name, ridge.owner, ridge.file_format) == (
        "ridge.safetensors",
        "ridge-run",
        "brainencoder-ridge",
    )
    assert encoder.model_type is not RidgeModel and ridge.model_type is RidgeModel
    assert encoder.from_checkpoints and not ridge.from_checkpoints


def test_one_registry_entry_decides_a_runs_model_kind(plugin_dir, tmp_path):
    """Run (create, save, read) and load_model (folder or file) read the same entry."""
    MODEL_KINDS.register(
        "toy",
        ModelKind("toy.safetensors", "run", "toy", ToyModel, _load_toy, _save_toy),
    )
    with Run.build(tmp_path / "run", kind="toy") as run:
        written = run.save_model(ToyModel(2.5), {"note": "x"})
        run.write_header("toy", None, {"settings": 1})
    assert written.name == "toy.safetensors"
    run = Run(tmp_path / "run")
    assert run.model_kind == "toy" and run.model_file() == tmp_path / "run" / "toy.safetensors"
    assert load_model(run.path).value == 2.5
    assert kind_of_file(run.model_file()) == "toy" and load_model(run.model_file()).value == 2.5
    assert read_metadata(run.model_file())["note"] == "x"
    assert kind_of_model(ToyModel(1.0)) == "toy"
    with pytest.raises(ConfigError, match=r"no model kind holds a str; registered: \["):
        kind_of_model("a model")

    # a folder whose header records no kind: by its model file
    (run.path / "config.yaml").write_text("run: {}\n")
    assert kind_in_folder(run.path) == "toy" and run.model_kind == "toy"
    # a kind nobody registered
    (run.path / "config.yaml").write_text("run: {model_kind: lasso}\n")
    with pytest.raises(CheckpointError, match="unknown model kind 'lasso'"):
        _ = run.model_kind


def test_model_files_are_recognised_by_their_header(store, tmp_path):
    model = create_encoder("tiny", store.space, img_size=32, readout={"latent_dim": 4})
    path = tmp_path / "model.safetensors"
    save_encoder(model, path)
    assert kind_of_file(path) == "encoder"
    assert type(load_model(path)).__name__ == "Encoder"
    assert kind_of_model(model) == "encoder"
    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(1)}, str(other), {"format": "something-else"})
    with pytest.raises(CheckpointError, match="not a brainencoder model file"):
        load_model(other)
    assert kind_in_folder(tmp_path / "empty") == "encoder"  # no model yet: training's


# ---------------------------------------------------------------------------- encoder presets
def test_encoder_presets_are_a_registry():
    assert {"eva02_base", "tiny"} <= set(ENCODERS.names()) == set(brainencoder.list_encoders())
    tiny = preset_config("tiny")
    assert (tiny.trunk, tiny.layers, tiny.img_size, tiny.pretrained) == (
        "resnet18",
        ["layer1", "layer2", "layer3"],
        112,
        False,
    )
    assert tiny.readout == {
        "name": "grouplin_seq",
        "hidden_dim": 256,
        "latent_dim": 256,
        "dropout": 0.3,
    }
    eva = preset_config("eva02_base", {"readout": {"dropout": 0.5}})
    assert eva.prefix_tokens and eva.trunk == EncoderConfig().trunk
    assert eva.readout == {
        "name": "grouplin",
        "hidden_dim": 1024,
        "latent_dim": 2048,
        "dropout": 0.5,
    }
    tiny.layers.append("layer4")  # a config is a copy: the preset stays
    assert preset_config("tiny").layers == ["layer1", "layer2", "layer3"]
    with pytest.raises(ConfigError, match=r"unknown encoder 'huge'; available: \['eva02_base'"):
        preset_config("huge")
    with pytest.raises(ConfigError, match="encoder 'tiny' is already registered"):
        register_encoder("tiny", {})


def test_bad_presets_are_refused_naming_them(plugin_dir):
    register_encoder("be_registries_bad", {"trunkk": "resnet18"})
    with pytest.raises(ConfigError, match=r"encoder preset 'be_registries_bad': unknown key"):
        preset_config("be_registries_bad")
    with pytest.raises(ConfigError, match="must be a mapping of EncoderConfig fields"):
        register_encoder("be_registries_list", ["resnet18"])
    config = EncoderConfig(trunk="resnet18", layers=["layer1"], pretrained=False, img_size=32)
    register_encoder("be_registries_whole", config)
    assert preset_config("be_registries_whole") == config


PRESET_PLUGIN = """
from brainencoder.models.presets import register_encoder

register_encoder(
    "be_registries_two_stages",
    {
        "trunk": "resnet18",
        "layers": ["layer1", "layer2"],
        "pretrained": False,
        "img_size": 32,
        "readout": {"name": "grouplin_seq", "hidden_dim": 8, "latent_dim": 4},
    },
)
"""


def test_a_plugin_encoder_preset_trains(store, plugin_dir, tmp_path, capsys):
    _write(plugin_dir, "be_registries_presets", PRESET_PLUGIN)
    out = tmp_path / "run"
    config = ["plugins=[be_registries_presets]", "encoder=be_registries_two_stages"]
    rest = [a for a in TINY_TRAIN if not a.startswith("model.")]
    paths = ["--store", str(store.path), "--out", str(out)]
    assert main(["train", "none", *config, *rest, *paths]) == 0
    assert json.loads(capsys.readouterr().out)["finished"]
    model = load_encoder(out / "best.safetensors")
    assert model.config.layers == ["layer1", "layer2"]  # the preset's, not tiny's three
    assert model.config.readout["hidden_dim"] == 8
    assert "be_registries_two_stages" in brainencoder.list_encoders()


def test_unknown_encoders_list_the_registered_ones(tmp_path, capsys):
    paths = ["--store", str(tmp_path), "--out", str(tmp_path / "run")]
    assert main(["train", "none", "encoder=huge", *paths]) == 1
    expected = "'encoder' must be one of ['eva02_base', 'tiny', 'tiny_pair']; got 'huge'"
    assert expected in capsys.readouterr().err


# ---------------------------------------------------------------------------- ridge solvers
SOLVER_PLUGIN = """
import numpy as np

from brainencoder.models.solvers import RIDGE_SOLVERS, RidgeFit


@RIDGE_SOLVERS.register("be_registries_mean")
def mean_only(X, Y, alphas, n_folds):
    n_targets = Y.shape[1]
    return RidgeFit(
        np.zeros((X.shape[1], n_targets), np.float32),
        np.asarray(Y.mean(0), np.float32),
        np.zeros(n_targets),
        np.zeros(n_targets),
    )
"""


def test_a_plugin_ridge_solver_is_chosen_on_the_command_line(store, plugin_dir, tmp_path, capsys):
    _write(plugin_dir, "be_registries_solvers", SOLVER_PLUGIN)
    out = tmp_path / "ridge"
    args = ["baseline", "ridge", "--store", str(store.path), "--features", "pixels"]
    args += ["--pixel-size", "8", "--out", str(out)]
    # without the plugin the name is unknown: one line listing the registered solvers
    assert main([*args, "--solver", "be_registries_mean"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unknown ridge solver 'be_registries_mean'; available: [")
    assert "'torch'" in err and err.count("\n") == 1
    assert not out.exists()
    plugin = ["--plugin", "be_registries_solvers"]
    assert main([*args, "--solver", "be_registries_mean", *plugin]) == 0
    assert "be_registries_mean" in capsys.readouterr().out
    model = RidgeModel.load(out / "ridge.safetensors")
    np.testing.assert_array_equal(model.fits["subj01"].coef, 0)  # the plugin's solver fitted
    assert Run(out).header["baseline"] == "be_registries_mean" and Run(out).model_kind == "ridge"


# ---------------------------------------------------------------------------- trunk families
def test_list_trunks_reads_every_family_that_lists_names(plugin_dir):
    def build(model_name, pretrained=False, weights=None, img_size=None, **kwargs):
        raise NotImplementedError

    build.list_names = lambda pattern, pretrained: [n for n in ["alpha", "beta"] if n[0] == "a"]
    TRUNK_FAMILIES.register("be_registries_family", build)
    names = brainencoder.list_trunks("resnet1*")
    assert names[0] == "resnet10t" and "be_registries_family:alpha" in names
    assert "be_registries_family:beta" not in names
    assert names == list_trunk_names("resnet1*")
    TRUNK_FAMILIES.register("be_registries_silent", lambda *a, **k: None)  # lists nothing
    assert brainencoder.list_trunks("resnet1*") == names


# ---------------------------------------------------------------------------- public names
def test_the_public_api_is_listed_once():
    """``brainencoder.__all__`` is the list; ``brainencoder.api`` exports exactly those names."""
    public = [n for n in brainencoder.__all__ if n != "__version__"]
    assert brainencoder.api.__all__ == public
    tree = ast.parse((PACKAGE / "api" / "__init__.py").read_text())
    imported = {
        alias.asname or alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.level == 1
        for alias in node.names
    }
    assert imported == set(public)
    for name in public:
        assert getattr(brainencoder, name) is getattr(brainencoder.api, name)
    assert sorted(dir(brainencoder)) == sorted(brainencoder.__all__)
