"""Plugins: a user's module registers a readout, a loss or a ridge solver, and it is used.

Every registry is the one :class:`~brainencoder.util.registry.Registry`: names
are registered once, unknown names list the valid ones, and a model file
whose readout is not registered asks for ``--plugin`` instead of importing
anything it names.
"""

from __future__ import annotations

import json
import sys
import textwrap
from dataclasses import dataclass

import numpy as np
import pytest
from torch import nn

from brainencoder.cli.main import main
from brainencoder.models.encoder import create_encoder
from brainencoder.models.modelfile import load_encoder
from brainencoder.models.readouts import (
    READOUTS,
    Readout,
    ReadoutContext,
    create_readout,
    register_readout,
)
from brainencoder.models.readouts.grouplin import GroupLinOptions, GroupLinReadout
from brainencoder.models.solvers import RIDGE_SOLVERS
from brainencoder.training.config import load_config
from brainencoder.training.losses import LOSSES
from brainencoder.util.errors import CheckpointError, ConfigError
from brainencoder.util.plugins import load_plugins
from brainencoder.util.registry import Registry
from conftest import TINY_TRAIN

# the tiny run without the default readout's options (a plugin readout has its own)
TRAIN = [a for a in TINY_TRAIN if not a.startswith("model.readout.")]

READOUT_PLUGIN = """
from dataclasses import dataclass

import torch
from torch import nn

from brainencoder.models.readouts import Readout, register_readout


@dataclass
class MineOptions:
    scale: float = 1.0


@register_readout("mine", MineOptions)
class MineReadout(Readout):
    '''Mean-pooled features of every layer, one linear map per subject.'''

    def __init__(self, feature_shapes, n_vertices, options):
        super().__init__(feature_shapes, n_vertices, options)
        self.n_channels = sum(s[0] for s in self.feature_shapes)

    def make_subject_module(self):
        return nn.Linear(self.n_channels, self.n_vertices)

    def forward(self, features, subject):
        pooled = torch.cat([f.flatten(2).mean(2) for f in features], 1) * self.options.scale
        out = pooled.new_zeros(pooled.shape[0], self.n_vertices)
        for index, module in enumerate(self.subject_modules()):
            rows = subject == index
            out[rows] = module(pooled[rows])
        return out
"""

LOSS_PLUGIN = """
from dataclasses import dataclass

import torch

from brainencoder.training.losses import Loss, register_loss

CALLS = []


@dataclass
class AbsOptions:
    weight: float = 1.0


@register_loss("plugin_abs", AbsOptions)
class AbsLoss(Loss):
    '''Masked mean absolute error (decomposes over samples).'''

    def __call__(self, pred, target, mask, denominator=None, subject=None):
        CALLS.append(pred.shape)
        diff = torch.where(mask, (pred.float() - target.float()).abs(), 0.0)
        if denominator is None:
            denominator = mask.sum().clamp_min(1)
        return self.options.weight * diff.sum() / denominator
"""

SOLVER_PLUGIN = """
import numpy as np

from brainencoder.models.solvers import RIDGE_SOLVERS, RidgeFit


@RIDGE_SOLVERS.register("plugin_mean")
def mean_only(X, Y, alphas, n_folds):
    '''Predict every vertex's training mean (a floor for the real solvers).'''
    n_targets = Y.shape[1]
    return RidgeFit(
        np.zeros((X.shape[1], n_targets), np.float32),
        np.asarray(Y.mean(0), np.float32),
        np.zeros(n_targets),
        np.zeros(n_targets),
    )
"""


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A folder on sys.path for plugin modules; what they register is removed afterwards."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))  # sys.path is restored afterwards
    registries = (READOUTS, LOSSES, RIDGE_SOLVERS)
    before = [set(r.names()) for r in registries]
    yield folder
    for registry, names in zip(registries, before, strict=True):
        for name in set(registry.names()) - names:
            registry.unregister(name)
    for name in [n for n in sys.modules if n.startswith("be_plugin_")]:
        del sys.modules[name]


def _write(folder, name, source):
    (folder / f"{name}.py").write_text(textwrap.dedent(source))


def test_a_plugin_readout_trains_and_evaluates_from_the_command_line(
    store, plugin_dir, tmp_path, capsys
):
    _write(plugin_dir, "be_plugin_readouts", READOUT_PLUGIN)
    out = str(tmp_path / "run")
    overrides = ["plugins=[be_plugin_readouts]", "model.readout.name=mine", "model.readout.scale=2"]
    paths = ["--store", str(store.path), "--out", out]
    assert main(["train", "none", *TRAIN, *overrides, *paths]) == 0
    assert json.loads(capsys.readouterr().out)["finished"]
    model = load_encoder(tmp_path / "run" / "best.safetensors")
    assert type(model.readout).__name__ == "MineReadout"
    assert model.config.readout == {"name": "mine", "scale": 2.0}
    assert main(["evaluate", out, "--split", "val"]) == 0
    assert "subj01" in capsys.readouterr().out

    # in a fresh process the readout is unknown: the model file asks for --plugin and
    # imports nothing it names
    READOUTS.unregister("mine")
    del sys.modules["be_plugin_readouts"]
    with pytest.raises(CheckpointError, match=r"readout 'mine' .*pass --plugin MODULE"):
        load_encoder(tmp_path / "run" / "best.safetensors")
    assert main(["evaluate", out, "--split", "val"]) == 1
    assert "pass --plugin MODULE" in capsys.readouterr().err
    assert "be_plugin_readouts" not in sys.modules
    assert main(["evaluate", out, "--split", "val", "--plugin", "be_plugin_readouts"]) == 0


def test_a_plugin_loss_trains(store, plugin_dir, tmp_path, capsys):
    _write(plugin_dir, "be_plugin_losses", LOSS_PLUGIN)
    out = str(tmp_path / "run")
    overrides = ["plugins=[be_plugin_losses]", "loss.name=plugin_abs", "loss.weight=2.0"]
    paths = ["--store", str(store.path), "--out", out]
    assert main(["train", "none", *TINY_TRAIN, *overrides, *paths]) == 0
    assert json.loads(capsys.readouterr().out)["finished"]
    assert sys.modules["be_plugin_losses"].CALLS  # the plugin's loss is what trained
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['loss.beta'\]"):
        load_config(None, ["plugins=[be_plugin_losses]", "loss.name=plugin_abs", "loss.beta=1"])


def test_a_plugin_ridge_solver_fits_and_unknown_solvers_are_refused(store, plugin_dir, tmp_path):
    from brainencoder.baselines.ridge import RidgeOptions, fit_ridge_baseline

    with pytest.raises(
        ConfigError,
        match=r"unknown ridge solver 'lasso'; available: \['himalaya', 'ols', 'sklearn', 'torch'\]",
    ):
        fit_ridge_baseline(store, tmp_path / "lasso", ridge=RidgeOptions("lasso"))
    assert not (tmp_path / "lasso").exists()  # refused before any work
    _write(plugin_dir, "be_plugin_solvers", SOLVER_PLUGIN)
    load_plugins(["be_plugin_solvers"])
    model = fit_ridge_baseline(store, tmp_path / "mean", ridge=RidgeOptions("plugin_mean"))
    np.testing.assert_array_equal(model.fits["subj01"].coef, 0)


def test_registered_names_are_unique():
    copy = type("Copy", (GroupLinReadout,), {})
    with pytest.raises(ConfigError, match=r"readout 'grouplin' is already registered \(by .*Group"):
        register_readout("grouplin", GroupLinOptions)(copy)
    assert READOUTS.get("grouplin") is GroupLinReadout  # the built-in stays
    widgets = Registry("widget")
    widgets.register("a", 1)
    with pytest.raises(ConfigError, match="widget 'a' is already registered"):
        widgets.register("a", 2)
    with pytest.raises(ConfigError, match="widget name '1a' is not valid"):
        widgets.register("1a", 3)

    @widgets.register("b")
    def b():
        return "b"

    assert widgets.names() == ["a", "b"] and "b" in widgets and widgets.get("b") is b
    assert ["a"] not in widgets  # an unhashable config value is simply not registered


def test_unknown_names_list_the_registered_ones():
    widgets = Registry("widget")
    widgets.register("a", 1)
    with pytest.raises(ConfigError, match=r"unknown widget 'c'; available: \['a'\]"):
        widgets.get("c")
    with pytest.raises(ConfigError, match=r"unknown readout 'nope'; available: \[.*'grouplin'"):
        create_readout("nope", [(4, 2, 2)], ["subj01"], 5)
    with pytest.raises(ConfigError, match=r"unknown readout 'nope'; available: \[.*'point'"):
        load_config(None, ["model.readout.name=nope"])
    with pytest.raises(ConfigError, match=r"unknown loss 'l9'; available: \[.*'mse'"):
        load_config(None, ["loss.name=l9"])
    with pytest.raises(
        ConfigError, match=r"unknown trunk family 'jax'; available: \['hf', 'timm'\]"
    ):
        create_encoder("tiny", None, trunk_family="jax")


CLASH_PLUGIN = """
from dataclasses import dataclass

from brainencoder.training.losses import Loss, register_loss


@dataclass
class NoOptions:
    pass


@register_loss("mse", NoOptions)
class MyMSE(Loss):
    pass
"""


def test_plugins_that_fail_to_import_are_named(plugin_dir):
    _write(plugin_dir, "be_plugin_broken", "import be_no_such_dependency\n")
    with pytest.raises(
        ConfigError,
        match=r"^plugin 'be_plugin_broken' could not be imported \(ModuleNotFoundError: "
        r"No module named 'be_no_such_dependency'\)$",
    ):
        load_config(None, ["plugins=[be_plugin_broken]"])
    with pytest.raises(ConfigError, match=r"plugin 'be_plugin_missing' could not be imported"):
        load_plugins(["be_plugin_missing"])
    _write(plugin_dir, "be_plugin_clash", CLASH_PLUGIN)
    with pytest.raises(
        ConfigError,
        match=r"plugin 'be_plugin_clash' could not be imported \(ConfigError: "
        r"loss 'mse' is already registered",
    ):
        load_plugins(["be_plugin_clash"])
    with pytest.raises(ConfigError, match=r"'plugins\[0\]' names a file; .*: 'my_readouts'"):
        load_config(None, ["plugins=[my_readouts.py]"])
    with pytest.raises(ConfigError, match=r"'plugins\[1\]' must be an importable module name"):
        load_plugins(["os", "../evil"])
    with pytest.raises(ConfigError, match="'plugins' must be a list; got 'os'"):
        load_config(None, ["plugins=os"])


def test_plugins_are_found_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    (tmp_path / "be_plugin_here.py").write_text("VALUE = 42\n")
    try:
        (module,) = load_plugins(["be_plugin_here"])
    finally:
        sys.modules.pop("be_plugin_here", None)
    assert module.VALUE == 42 and str(tmp_path) not in sys.path  # loaded by file only
    before = list(sys.path)
    assert load_plugins([]) == [] and sys.path == before  # no plugins: sys.path untouched


@dataclass
class _SpyOptions:
    pass


def test_readouts_get_the_context_fields_they_need():
    seen = {}

    @register_readout("be_spy", _SpyOptions)
    class Spy(Readout):
        needs = frozenset({"regions"})

        def __init__(self, feature_shapes, n_vertices, options, **context):
            super().__init__(feature_shapes, n_vertices, options)
            seen.update(context)

        def make_subject_module(self):
            return nn.Linear(4, self.n_vertices)

    try:
        regions = object()
        create_readout("be_spy", [(4, 2, 2)], ["subj01"], 5, ReadoutContext(regions=regions))
        assert seen == {"regions": regions}  # not the PCA: the readout does not need it
        seen.clear()
        create_readout("be_spy", [(4, 2, 2)], ["subj01"], 5)
        assert seen == {"regions": None}  # nothing provided it (a model file brings its own)
    finally:
        READOUTS.unregister("be_spy")
    bad = type("Bad", (Readout,), {"needs": frozenset({"atlas"})})
    with pytest.raises(ConfigError, match=r"readout 'bad': 'needs' must be a frozenset of .*'pca'"):
        register_readout("bad", _SpyOptions)(bad)
    assert "bad" not in READOUTS
