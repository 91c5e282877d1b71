"""The API's workflow functions: explicit, documented keyword signatures; overrides as mappings.

``help(be.train)`` and an editor list every option: no ``**kwargs``, every
parameter in the numpydoc Parameters section with the signature's default, the
options after the command's positional arguments keyword-only. ``load_config``
reads a mapping as it reads the command line's ``key=value`` strings, with the
same errors, and each function refuses what its command's parser refuses before
any work.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from pathlib import Path

import pytest
import yaml

import brainencoder as be
from brainencoder.training.config import load_config, parse_overrides
from brainencoder.util.errors import ConfigError

# each function with the positional arguments of its command; everything after is keyword-only
POSITIONAL = {
    "prepare": ["data", "store"],
    "train": ["config"],
    "evaluate": ["run", "split"],
    "adapt": ["run", "data", "subject", "out"],
    "explore": ["run", "images", "subject", "rois", "out"],
    "compare": ["runs", "out"],
    "score": ["submission", "truth"],
    "synth": ["out"],
    "validate": ["data"],
    "pca": ["store", "out"],
    "baseline": ["kind"],
    "soup": ["runs"],
    "import_original": ["checkpoint"],
    "submit": ["runs"],
    "plot": ["run"],
    "report": ["run"],
    "calibrate": ["runs"],
    "synthesize": ["runs"],
    "plan": ["runs", "pool"],
}
_SECTION = re.compile(r"^(\w[\w ]*)\n-{3,}$", re.MULTILINE)
_ENTRY = re.compile(r"^(\w+(?:, \w+)*)(?: : (.+))?$")


def _sections(doc: str) -> dict[str, str]:
    """The numpydoc sections of a docstring by title ("Parameters" -> its body)."""
    marks = list(_SECTION.finditer(doc))
    ends = [m.start() for m in marks[1:]] + [len(doc)]
    return {m.group(1): doc[m.end() : end] for m, end in zip(marks, ends)}


def _documented(doc: str) -> list[tuple[str, str]]:
    """(name, type text) of every entry of the Parameters section, in order."""
    out = []
    for line in _sections(doc).get("Parameters", "").splitlines():
        if not line or line.startswith(" "):  # a description line
            continue
        match = _ENTRY.match(line)
        assert match, f"not a numpydoc parameter line: {line!r}"
        out += [(name, match.group(2) or "") for name in match.group(1).split(", ")]
    return out


@pytest.mark.parametrize("name", list(POSITIONAL))
def test_signatures_are_explicit_and_keyword_only_after_the_commands_positionals(name):
    function = getattr(be, name)
    params = inspect.signature(function).parameters.values()
    variadic = [p.name for p in params if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    assert not variadic, f"be.{name} takes *{variadic}"
    positional = [p.name for p in params if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert positional == POSITIONAL[name]
    assert all(p.kind == p.KEYWORD_ONLY for p in params if p.name not in POSITIONAL[name])
    untyped = [p.name for p in params if p.annotation is inspect.Parameter.empty]
    assert not untyped, f"be.{name}: untyped {untyped}"
    assert inspect.signature(function).return_annotation is not inspect.Signature.empty


@pytest.mark.parametrize("name", list(POSITIONAL))
def test_every_parameter_is_documented_with_its_default(name):
    function = getattr(be, name)
    doc = inspect.getdoc(function)
    params = inspect.signature(function).parameters
    documented = _documented(doc)
    assert [n for n, _ in documented] == list(params), f"be.{name}: docs and signature differ"
    for key, kind in documented:
        assert kind, f"be.{name}: {key} has no type"
        default = params[key].default
        if "default=" in kind:
            text = kind.split("default=", 1)[1]
            assert ast.literal_eval(text) == default, f"be.{name}: {key} default={text}"
        if "optional" in kind:
            assert default is None, f"be.{name}: {key} is optional but defaults to {default!r}"
    sections = _sections(doc)
    assert "Returns" in sections and ">>> " in sections.get("Examples", "")


def test_adapt_takes_every_adapt_config_setting_with_its_default():
    from brainencoder.experiments.adapt import AdaptConfig

    params = inspect.signature(be.adapt).parameters
    defaults = AdaptConfig()
    for field in dataclasses.fields(AdaptConfig):
        assert field.name in params, f"be.adapt lacks AdaptConfig.{field.name}"
        if field.name != "ridge_alphas":  # None there: AdaptConfig's list
            assert params[field.name].default == getattr(defaults, field.name), field.name


# --------------------------------------------------------------------------- load_config


def test_a_mapping_reads_as_the_strings_do():
    strings = [
        "model.img_size=32",
        "model.readout.name=point",
        "model.readout.channels=16",
        "lr=0.001",
        "crop_scale=[0.5, 1]",
        "loss.name=smooth_l1",
        "pca_file=runs/pca.safetensors",
    ]
    dotted = {
        "model.img_size": 32,
        "model.readout.name": "point",
        "model.readout.channels": 16,
        "lr": 1e-3,
        "crop_scale": (0.5, 1),  # a tuple: a list, as YAML would give
        "loss.name": "smooth_l1",
        "pca_file": Path("runs/pca.safetensors"),  # a path: its text
    }
    nested = {
        "model": {"img_size": 32, "readout": {"name": "point", "channels": 16}},
        "lr": 1e-3,
        "crop_scale": [0.5, 1.0],
        "loss": {"name": "smooth_l1"},
        "pca_file": "runs/pca.safetensors",
    }
    mixed = {"model": {"readout": {"name": "point"}}, "model.readout.channels": 16}
    mixed |= {"model.img_size": 32, **{k: v for k, v in nested.items() if k != "model"}}
    expected = load_config(None, strings).to_dict()
    for overrides in (dotted, nested, mixed):
        before = repr(overrides)
        assert load_config(None, overrides).to_dict() == expected
        assert repr(overrides) == before  # the caller's mapping is left as it was
    yaml.safe_dump(expected)  # what the run folder saves: plain YAML
    assert parse_overrides(["a.b.c=[1, 2]"]) == {"a": {"b": {"c": [1, 2]}}}


def test_a_mapping_over_a_file_replaces_a_readout_as_strings_do(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  readout: {name: point, channels: 8}\n")
    dropout = load_config(path, {"model.readout.dropout": 0.5}).model["readout"]
    assert dropout == load_config(path, ["model.readout.dropout=0.5"]).model["readout"]
    assert dropout == {"name": "point", "channels": 8, "dropout": 0.5}
    other = load_config(path, {"model.readout": {"name": "grouplin"}}).model["readout"]
    assert other == {"name": "grouplin"}  # the file's point options do not follow


@pytest.mark.parametrize(
    ("mapping", "strings", "message"),
    [
        ({"lrr": 1}, ["lrr=1"], r"^unknown key\(s\) \['lrr'\]; valid: "),
        ({"epochs": "many"}, ["epochs=many"], r"^'epochs' must be int; got 'many'$"),
        ({"batch_size": 0}, ["batch_size=0"], r"^'batch_size' must be >= 1; got 0$"),
        (
            {"model": {"readout": {"hidden_dim": "abc"}}},
            ["model.readout.hidden_dim=abc"],
            r"^'model.readout.hidden_dim' must be int; got 'abc'$",
        ),
        ({"model.depth": 3}, ["model.depth=3"], r"unknown key\(s\) \['model.depth'\]"),
        ({"amp": "fp8"}, ["amp=fp8"], r"^'amp' must be one of"),
        ({"model": 3, "model.depth": 2}, ["model=3", "model.depth=2"], r"'model' is already set"),
    ],
)
def test_a_mapping_meets_the_same_errors_as_strings(mapping, strings, message):
    with pytest.raises(ConfigError, match=message) as from_strings:
        load_config(None, strings)
    with pytest.raises(ConfigError, match=message) as from_mapping:
        load_config(None, mapping)
    if "already set" not in message:  # that one names the override as it was written
        assert str(from_mapping.value) == str(from_strings.value)


def test_malformed_overrides_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"^overrides must be a mapping or a list of key=value"):
        load_config(None, "lr=1")  # one string, not a list of them
    with pytest.raises(ConfigError, match=r"^override key 3 must be a dotted name"):
        load_config(None, {3: 1})
    with pytest.raises(ConfigError, match=r"^override 3 must be a string that looks like key="):
        load_config(None, [3])
    with pytest.raises(ConfigError, match=r"^override 'epochs' must look like key=value$"):
        load_config(None, ["epochs"])


# --------------------------------------------------------------------------- the commands' checks


def test_each_function_refuses_what_its_command_refuses_before_any_work(tmp_path):
    nowhere = tmp_path / "nowhere"
    with pytest.raises(ConfigError, match=r"^unknown key\(s\) \['lrr'\]"):
        be.train(None, store=nowhere, out=tmp_path / "r", overrides={"lrr": 1})
    with pytest.raises(ConfigError, match=r"^'split' must be one of \['val', 'testval', "):
        be.evaluate(nowhere, "tests")
    with pytest.raises(ConfigError, match=r"^'split' must be one of \['testval', 'val', 'test'\]"):
        be.compare([nowhere, nowhere], tmp_path / "c", split="train")
    with pytest.raises(ConfigError, match=r"^'n_boot' must be an integer >= 1; got 0$"):
        be.compare([nowhere, nowhere], tmp_path / "c", n_boot=0)
    with pytest.raises(ConfigError, match=r"^'seed' must be in \[0, 4294967295\]"):
        be.compare([nowhere, nowhere], tmp_path / "c", seed=-1)
    with pytest.raises(ConfigError, match=r"^'workers' must be an integer >= 1; got 0$"):
        be.prepare(nowhere, tmp_path / "s", workers=0)
    with pytest.raises(ConfigError, match=r"^'n_images' must be an integer >= 0; got 2.5$"):
        be.adapt(nowhere, nowhere, "subj09", tmp_path / "a", n_images=2.5)
    with pytest.raises(ConfigError, match=r"^'epochs' must be int; got 'x'$"):  # as epochs=x
        be.adapt(nowhere, nowhere, "subj09", tmp_path / "a", epochs="x")
    with pytest.raises(ConfigError, match=r"^'init' must be 'average' or 'default'; got 'mean'$"):
        be.adapt(nowhere, nowhere, "subj09", tmp_path / "a", init="mean")
    assert not any(tmp_path.iterdir())  # nothing written


# --------------------------------------------------------------------------- the documentation


def _doc_calls() -> list[tuple[str, ast.Call]]:
    """(page, call) of every ``be.NAME(...)`` call of a workflow in the docs' Python blocks."""
    root = Path(__file__).parents[1]
    found = []
    for page in [root / "README.md", *sorted((root / "docs").glob("**/*.md"))]:
        for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.DOTALL):
            for node in ast.walk(ast.parse(block)):
                func = node.func if isinstance(node, ast.Call) else None
                if isinstance(func, ast.Attribute) and func.attr in POSITIONAL:
                    if isinstance(func.value, ast.Name) and func.value.id == "be":
                        found.append((str(page.relative_to(root)), node))
    return found


def test_the_documented_calls_fit_the_signatures():
    calls = _doc_calls()
    assert calls  # the quickstart's at least
    wrong = []
    for where, call in calls:
        signature = inspect.signature(getattr(be, call.func.attr))
        try:  # placeholders: only the arguments' names and places are checked
            signature.bind(*call.args, **{k.arg: k.value for k in call.keywords if k.arg})
        except TypeError as exc:
            wrong.append(f"{where}: {ast.unparse(call)}: {exc}")
    assert not wrong, "\n".join(wrong)
