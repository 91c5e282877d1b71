"""The README and the documentation against the code: every option, config key and
quoted message they name exists.

The text is parsed, not copied: command lines of their shell code blocks are run
through the command's own argparse parser (``build_parser``) and their
``key=value`` settings through the config loader of that command; backticked
spans that name an option (``--workers N``) or a config key
(``cache_scope: node``, ``model.trunk_weights=PATH``, ``model.readout.dropout``)
are looked up among the parsers' options and the fields of ``TrainConfig``,
``EncoderConfig``, the registered readouts' and losses' options, ``LoRAConfig``
and ``AdaptConfig``. The README and every Markdown file under ``docs/`` are
read the same way (Python code blocks are not command lines). The readout
example of the concepts page is run as written and trained, and the quoted
messages of some rows of the troubleshooting page are compared with the ones
printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.resources
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from brainencoder.cli.main import build_parser, main
from brainencoder.experiments.adapt import AdaptConfig, load_adapt_config
from brainencoder.models.encoder import EncoderConfig
from brainencoder.models.lora import LoRAConfig
from brainencoder.models.readouts import list_readouts, readout_class
from brainencoder.training.config import TrainConfig, load_config
from brainencoder.training.losses import LOSSES, list_losses

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
# where the README's long sections went
CONCEPTS = ROOT / "docs" / "concepts.md"
TROUBLESHOOTING = ROOT / "docs" / "troubleshooting.md"

_FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.S | re.M)
_NOT_SHELL = {"python", "text"}
_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
_KEY = r"[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*"
_KEY_VALUE = re.compile(rf"(?<![\w.\-/'\"])({_KEY})=(?!=)")
_YAML_SPAN = re.compile(rf"^({_KEY}): (\S.*)$")
# `name=value` in spans that is not a setting: a placeholder, keyword arguments of the
# functions the README cites, numpy's words inside a quoted message
_NOT_SETTINGS = {"key", "weights_only", "alpha_per_target", "allow_pickle"}
# spans that are other programs' command lines (their options are theirs)
_OTHER_PROGRAMS = {"hf", "huggingface-cli", "pip", "torchrun", "git", "make", "apt-get"}
# a bare key of a nested config: `model.trunk_weights`, `lora.weight_decay`
_DOTTED_SPAN = re.compile(r"^(?:model|loss|lora)\.[a-z_][a-z0-9_.]*$")


def _read(path: Path) -> tuple[list[str], list[str]]:
    """(shell code blocks, backticked spans outside any block) of a Markdown file.

    Blocks marked ``python`` (API examples) or ``text`` (diagrams) hold no command lines.
    """
    text = path.read_text()
    blocks = [body for lang, body in _FENCE.findall(text) if lang.strip() not in _NOT_SHELL]
    prose = _FENCE.sub("", text)
    spans = [s.strip() for s in re.findall(r"`([^`\n]+)`", prose)]
    return blocks, spans


def _unbracket(word: str) -> str:
    """``[--seed`` -> ``--seed``, ``0]`` -> ``0`` (optional parts); ``a=[1,2]`` stays."""
    if word.startswith("[") and (word[1:2] == "-" or word.count("[") > word.count("]")):
        word = word[1:]
    if word.endswith("]") and word.count("]") > word.count("["):
        word = word[:-1]
    return word


def _command_lines(block: str) -> list[tuple[list[str], bool]]:
    """(argv after ``brainencoder``, whether the line elides words with ``...``)."""
    lines, out = block.replace("\\\n", " ").splitlines(), []
    for line in lines:
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        if "brainencoder" not in words:
            continue
        argv = [_unbracket(w) for w in words[words.index("brainencoder") + 1 :]]
        out.append(([w for w in argv if w and w != "..."], "..." in argv))
    return out


class _ArgumentError(Exception):
    pass


def _raise(self, message):
    raise _ArgumentError(message)


def _parse(argv: list[str], elided: bool) -> tuple[argparse.Namespace, list[str]]:
    """What ``brainencoder`` parses from ``argv`` (main's own way: known args, then the
    ``key=value`` settings among the rest); a line that elides words gets placeholders
    for the options it leaves out."""
    while True:
        try:
            args, extra = build_parser().parse_known_args(argv)
        except _ArgumentError as exc:
            missing = re.match(r"the following arguments are required: (.*)", str(exc))
            names = missing[1].split(", ") if missing else []
            if not (elided and names and all(n.startswith("--") for n in names)):
                raise
            argv = [*argv, *(w for n in names for w in (n.split("/")[0], "X"))]
            continue
        settings = [e for e in extra if "=" in e and not e.startswith("-")]
        if hasattr(args, "overrides"):
            args.overrides = [*args.overrides, *settings]
            extra = [e for e in extra if e not in settings]
        return args, extra


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _walk(argv: list[str]) -> tuple[argparse.ArgumentParser, list[str], list[str]]:
    """(the innermost parser, the command words, the remaining words) of ``argv``."""
    parser, words = build_parser(), []
    while argv and argv[0] in _subparsers(parser):
        parser = _subparsers(parser)[argv[0]]
        words.append(argv[0])
        argv = argv[1:]
    return parser, words, argv


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings}


def _all_options() -> set[str]:
    found, todo = set(), [build_parser()]
    while todo:
        parser = todo.pop()
        found |= _options(parser)
        todo += list(_subparsers(parser).values())
    return found


def _benchmark_options() -> set[str]:
    """Options of the benchmark scripts (the README names some: ``--reduced``)."""
    return {o for p in (ROOT / "benchmarks").glob("*.py") for o in _OPTION.findall(p.read_text())}


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _option_fields(names, get) -> set[str]:
    return {f for name in names for f in _fields(get(name).options_class)}


def _known_key(key: str, anywhere: bool = False) -> bool:
    """Whether ``key`` (``lr``, ``model.readout.dropout``...) is a config key.

    ``anywhere``: a bare name may also be an option of a nested config
    (``embedding_scale``, ``channels``: a readout's).
    """
    readout = _option_fields(list_readouts(), readout_class) | {"name"}
    loss = _option_fields(list_losses(), LOSSES.get) | {"name"}
    head, *rest = key.split(".")
    if not rest:
        top = _fields(TrainConfig) | _fields(AdaptConfig)
        if anywhere:
            top |= _fields(EncoderConfig) | readout | loss | _fields(LoRAConfig)
        return head in top
    if head == "model":
        if rest[0] == "readout":
            return len(rest) == 1 or (len(rest) == 2 and rest[1] in readout)
        if rest[0] == "trunk_kwargs":  # the mapping, or any keyword of the trunk's builder
            return len(rest) <= 2
        return len(rest) == 1 and rest[0] in _fields(EncoderConfig)
    if head == "loss":
        return len(rest) == 1 and rest[0] in loss
    if head == "lora":
        return len(rest) == 1 and rest[0] in _fields(LoRAConfig)
    return False


def _packaged(name: str) -> Path | None:
    """The packaged config ``train NAME`` reads (the README names no YAML files of its own)."""
    if name in ("", "none"):
        return None
    path = importlib.resources.files("brainencoder") / "configs" / f"{name}.yaml"
    if not path.is_file():
        raise _ArgumentError(f"train {name!r}: no packaged config of that name")
    return Path(str(path))


@pytest.fixture(scope="module")
def texts():
    return {path.relative_to(ROOT): _read(path) for path in DOCS}


def test_the_readme_and_the_docs_are_read(texts):
    def commands(path):
        return [argv for block in texts[path][0] for argv, _ in _command_lines(block)]

    readme = commands(Path("README.md"))
    assert len(readme) >= 5 and any(argv[0] == "train" for argv in readme)
    every = [argv for path in texts for argv in commands(path)]
    assert len(every) > 20 and sum(len(spans) for _, spans in texts.values()) > 300
    assert len(texts) >= 8  # README.md and the pages under docs/
    assert [lang for lang, _ in _FENCE.findall("```python\nx\n```\n```text\ny\n```\n")] == [
        "python",
        "text",
    ]
    assert _unbracket("[--seed") == "--seed" and _unbracket("[--uniform]") == "--uniform"
    assert _unbracket("a=[1,2]") == "a=[1,2]" and _unbracket("0]") == "0"
    assert _KEY_VALUE.findall("lr=3e-4 model.readout.dropout=0.5 a==b") == [
        "lr",
        "model.readout.dropout",
    ]


def test_command_lines_use_existing_commands_options_and_keys(texts, monkeypatch):
    """Each command line parses as ``brainencoder`` parses it, and its settings load."""
    monkeypatch.setattr(argparse.ArgumentParser, "error", _raise)
    problems = []
    for path, (blocks, _) in texts.items():
        for argv, elided in (line for block in blocks for line in _command_lines(block)):
            where = f"{path}: brainencoder {' '.join(argv)}"
            try:
                args, extra = _parse(argv, elided)
                if extra:
                    raise _ArgumentError(f"unrecognized arguments: {' '.join(extra)}")
                if args.command == "train":
                    load_config(_packaged(args.config), args.overrides)
                elif args.command == "adapt":
                    load_adapt_config(args.overrides)
            except Exception as exc:  # any refusal is the finding
                problems.append(f"{where}: {type(exc).__name__}: {exc}")
    assert not problems, "\n".join(problems)


def test_backticked_options_exist(texts):
    every, benchmarks, problems = _all_options(), _benchmark_options(), []
    commands = set(_subparsers(build_parser()))
    for path, (_, spans) in texts.items():
        for span in spans:
            found = _OPTION.findall(span)
            if not found:
                continue
            words = span.split()
            if words[0] in _OTHER_PROGRAMS:
                continue
            if words[0] == "brainencoder":
                words = words[1:]
            if words and words[0] in commands:  # `prepare OUT STORE --subjects ...`
                allowed = _options(_walk(words)[0])
            elif words and words[0] == "python" and len(words) > 1:  # a benchmark script
                allowed = set(_OPTION.findall((ROOT / words[1]).read_text()))
            else:
                allowed = every | benchmarks
            problems += [f"{path}: `{span}`: {o}" for o in found if o not in allowed]
    assert not problems, "\n".join(problems)


def test_backticked_config_keys_exist(texts):
    problems = []
    for path, (_, spans) in texts.items():
        for span in spans:
            keys = [k for k in _KEY_VALUE.findall(span) if k not in _NOT_SETTINGS]
            bad = [k for k in keys if not _known_key(k)]
            match = _YAML_SPAN.match(span)
            if match and not keys and match[1] not in ("error", "interrupted"):
                try:  # `cache_scope: node`; `dim: 64, queries_per_region: 8`
                    mapping = yaml.safe_load("{" + span + "}")
                except yaml.YAMLError:
                    mapping = None
                if isinstance(mapping, dict):
                    bad += [k for k in mapping if not _known_key(str(k), anywhere=True)]
            if _DOTTED_SPAN.match(span) and not _known_key(span):
                bad.append(span)
            problems += [f"{path}: `{span}`: {k}" for k in bad]
    assert not problems, "\n".join(problems)


def test_the_key_check_catches_what_it_should():
    assert _known_key("lr") and _known_key("model.readout.dropout")
    assert _known_key("model.trunk_weights") and _known_key("lora.weight_decay")
    assert _known_key("cache_scope") and _known_key("loss.beta")
    assert not _known_key("trunk_weights") and not _known_key("model.readout.nonsense")
    assert not _known_key("lora.rnak") and _known_key("embedding_scale", anywhere=True)
    _, words, rest = _walk(["baseline", "ridge", "--store", "S"])
    assert words == ["baseline"] and rest == ["ridge", "--store", "S"]  # `ridge`: a positional
    assert "--workers" in _options(_walk(["predict"])[0])


# --------------------------------------------------------------------------- the example readout


def _readout_example() -> str:
    (example,) = [b for _, b in _FENCE.findall(CONCEPTS.read_text()) if "@register_readout(" in b]
    return example


def test_the_readme_readout_example_trains(store, tmp_path, monkeypatch, capsys):
    """The class of the concepts page, written to a module of the user's own and named
    as a plugin, trains with the override the page gives and serves predictions."""
    import json

    from brainencoder.models.modelfile import load_encoder
    from brainencoder.models.readouts import READOUTS

    header = """
    from dataclasses import dataclass

    import torch
    from torch import nn

    from brainencoder.models.readouts import Readout, register_readout
    from brainencoder.models.readouts.subject_layers import apply_per_subject
    """
    (tmp_path / "readme_readout.py").write_text(textwrap.dedent(header) + _readout_example())
    monkeypatch.syspath_prepend(str(tmp_path))
    page = CONCEPTS.read_text()
    override = re.search(r"`(model\.readout=\{[^`]*\})` trains it", page)
    assert override, "docs/concepts.md no longer says which override trains the example"
    settings = [
        "plugins=[readme_readout]",
        override[1],
        "model.img_size=32",
        "epochs=1",
        "batch_size=32",
        "cache_features=true",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    run = tmp_path / "run"
    try:
        argv = ["train", "none", *settings, "--store", str(store.path), "--out", str(run)]
        assert main(argv) == 0
        assert json.loads(capsys.readouterr().out)["finished"]
        model = load_encoder(run / "best.safetensors")
        assert type(model.readout).__name__ == "MeanPoolReadout"
        assert model.config.readout == {"name": "mean_pool", "scale": 2.0}
        prediction = model.predict(store.images[:2], "subj01")
        assert prediction["lh"].shape[0] == 2
    finally:
        if "mean_pool" in READOUTS.names():
            READOUTS.unregister("mean_pool")
        sys.modules.pop("readme_readout", None)


# --------------------------------------------------------------------------- quoted messages


def _row(first_cell: str) -> str:
    """The 'what you see' cell of a troubleshooting row, by its first cell."""
    for line in TROUBLESHOOTING.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] == first_cell:
            return cells[1]
    raise AssertionError(f"no troubleshooting row {first_cell!r}")


def _quoted(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def test_quoted_messages_of_unknown_names_are_the_printed_ones(store, tmp_path):
    """In a fresh process (only the built-in readouts and losses registered)."""
    cell = _quoted(_row("unknown encoder, readout or loss"))
    code = textwrap.dedent(
        f"""
        from brainencoder.cli.main import main
        for setting in ("encoder=huge", "model.readout.name=linear", "loss.name=foo"):
            main(["train", "none", setting, "--store", {str(store.path)!r}, "--out", "r"])
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    printed = result.stderr.strip().splitlines()
    assert len(printed) == 3 and len(cell) == 3, (printed, cell)
    for quoted, line in zip(cell, printed, strict=True):
        assert line.endswith(quoted.removeprefix("error: ")), (quoted, line)


def test_quoted_messages_of_bad_integer_options_are_the_printed_ones(capsys):
    cell = _quoted(_row("`--batch-size 0`, `--workers -1`"))
    argv = ["predict", "run", "images", "--subject", "subj01", "--out", "p.npz"]
    printed = []
    for extra in (["--batch-size", "0"], ["--workers", "-1"]):
        with pytest.raises(SystemExit):
            main([*argv, *extra])
        printed.append(capsys.readouterr().err.strip().splitlines()[-1])
    assert printed == cell


def test_quoted_offline_weights_hint_is_the_printed_one(monkeypatch):
    from brainencoder.models.trunk import Trunk
    from brainencoder.util.errors import BrainEncoderError

    (quoted,) = _quoted(_row("pretrained weights offline"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BrainEncoderError) as info:
        Trunk("test_vit.r160_in1k", [0], pretrained=True)
    parts = [p.strip() for p in quoted.removeprefix("error: ").split("...") if p.strip(" .")]
    message = str(info.value)
    for part in parts:  # the quote elides what depends on the model (`...`)
        assert part.strip("'( )") in message, (part, message)
