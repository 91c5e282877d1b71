"""Every fenced example of the README and the docs runs as written.

Each ``bash`` or ``python`` block of README.md and docs/*.md carries a marker, an
HTML comment on the line just before its fence (mkdocs renders nothing of it):

- ``<!-- example: run -->``: the runner runs the block as written;
- ``<!-- example: run; A -> B; brainencoder train + epochs=1 -->``: first each
  ``A -> B`` replaces the text A by B (A must occur in the block), and each
  ``brainencoder CMD + ARGS`` appends ARGS to every ``brainencoder CMD`` line:
  the small settings (one epoch, 32 px) or a packaged config that runs offline;
- ``<!-- example: skip (why) -->``: not runnable here (GPUs, downloads, the make
  targets themselves); the reason is required.

A bash block runs under ``bash -e`` in a fresh folder, ``brainencoder`` being
``python -m brainencoder``; optional parts in square brackets
(``[--noise-ceiling NC_DIR]``) are left out. A python block is executed there
with ``brainencoder`` imported as ``be``. The folder holds, under the names the
examples use, the synthetic data (``DATA_ROOT``), its prepared store
(``STORE``), one-epoch runs (``runs/p1``, ``runs/p2``, ``runs/p1b``, a pixel
ridge ``runs/ridge``), the truth folder (``NC_DIR``, ``TRUTH_DIR``), an image
folder (``my_images/``), an HDF5 of images, a submission and ``demo-output/``
(the demo's data and run names): each only where the block names it and does
not write it itself. Blocks that train or prepare are marked slow.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_TRAIN

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.S | re.M)
_MARKER = re.compile(r"^<!-- example: (run|skip)(.*) -->$")
_CODE = {"bash", "sh", "shell", "console", "python", "py", "pycon"}
_OPTIONAL = re.compile(r" \[[^\]\['\"]*\]")
_SLOW = re.compile(
    r"brainencoder (train|prepare|baseline|pca|adapt|soup|synth) |be\.(train|prepare)\("
)


def _blocks(path: Path) -> list[tuple[int, str, str, str | None]]:
    """(line number, language, body, marker line or None) of every fenced block."""
    text = path.read_text()
    found = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = before.strip() if _MARKER.match(before.strip()) else None
        found.append((line, match[1].strip(), match[2], marker))
    return found


def _examples() -> list:
    params = []
    for path in PAGES:
        for line, lang, body, marker in _blocks(path):
            if lang not in _CODE or marker is None or not marker.startswith("<!-- example: run"):
                continue
            rel = f"{path.relative_to(ROOT)}:{line}"
            slow = [pytest.mark.slow] if _SLOW.search(body) else []
            params.append(pytest.param(rel, lang, body, marker, id=rel, marks=slow))
    return params


def _apply(body: str, marker: str) -> str:
    """The block with the marker's substitutions and appended settings."""
    rest = _MARKER.match(marker)[2]
    for clause in (c.strip() for c in rest.split(";") if c.strip()):
        if " -> " in clause:
            old, new = clause.split(" -> ", 1)
            assert old in body, f"marker substitution {old!r}: not in the block"
            body = body.replace(old, new)
        elif " + " in clause:
            command, args = clause.split(" + ", 1)
            lines = body.replace("\\\n", " ").splitlines()
            hit = [i for i, ln in enumerate(lines) if command + " " in ln]
            assert hit, f"marker {clause!r}: no {command!r} line in the block"
            for i in hit:
                code, *comment = re.split(r"(\s+#\s)", lines[i], maxsplit=1)
                lines[i] = f"{code} {args}{''.join(comment)}"
            body = "\n".join(lines) + "\n"
        else:
            raise AssertionError(f"marker clause {clause!r}: write 'A -> B' or 'COMMAND + ARGS'")
    return body


def _created(body: str, name: str) -> bool:
    """Whether the block writes ``name`` itself (``--out NAME``, ``prepare X NAME``)."""
    n = re.escape(name.rstrip("/"))
    pattern = rf"(--out\s+|out=[\"']|prepare\s+\S+\s+|prepare\(\s*[\"'][^\"']*[\"'],\s*[\"']){n}\b"
    return re.search(pattern, body) is not None


def _materialize(world: dict[str, Path], body: str, where: Path) -> None:
    """Copy (or link, for read-only inputs) the world's names the block uses into ``where``."""
    for name, source in world.items():
        if not re.search(rf"(?<![\w/-]){re.escape(name)}(?![\w-])", body) or _created(body, name):
            continue
        target = where / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir() and name not in ("DATA_ROOT", "NC_DIR", "TRUTH_DIR", "my_images"):
            shutil.copytree(source, target, symlinks=True)
        elif source.is_dir():
            target.symlink_to(source, target_is_directory=True)
        else:
            shutil.copy(source, target)


def _commands(body: str) -> list[list[str]] | None:
    """The block's command lines as argument lists, if each runs ``brainencoder`` alone."""
    text = _OPTIONAL.sub("", body).replace("\\\n", " ")
    lines = [shlex.split(line, comments=True) for line in text.splitlines()]
    lines = [line for line in lines if line]
    shell = set("|&;<>$`*?(){}")
    if any(line[0] != "brainencoder" or shell & set("".join(line)) for line in lines):
        return None
    return [line[1:] for line in lines]


def run_block(body: str, where: Path, monkeypatch) -> tuple[int, str]:
    """Run a bash block in ``where``: (exit status, output).

    A block of ``brainencoder`` lines only runs them in this process, one after
    the other, stopping at the first non-zero status (``bash -e``), through the
    command line's own ``main`` (the same parser and error handling as the
    installed command, without a Python start-up per line); any other block
    runs under bash (:func:`run_bash`).
    """
    from brainencoder.cli.main import main

    commands = _commands(body)
    if commands is None:
        result = run_bash(body, where)
        return result.returncode, result.stdout[-3000:] + result.stderr[-3000:]
    monkeypatch.chdir(where)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    for argv in commands:
        try:
            status = main(argv)
        except SystemExit as exc:  # argparse's refusal of an option
            status = exc.code if isinstance(exc.code, int) else 1
        if status:
            return status, f"brainencoder {shlex.join(argv)} exited with {status}"
    return 0, ""


def run_bash(body: str, where: Path) -> subprocess.CompletedProcess:
    """Run a bash block in ``where`` (``brainencoder`` = ``python -m brainencoder``)."""
    script = 'set -e\nbrainencoder() { "$BE_PYTHON" -m brainencoder "$@"; }\n' + _OPTIONAL.sub(
        "", body
    )
    (where / "example.sh").write_text(script)
    env = {**os.environ, "BE_PYTHON": sys.executable, "MPLBACKEND": "Agg"}
    return subprocess.run(
        ["bash", "example.sh"], cwd=where, env=env, capture_output=True, text=True, timeout=900
    )


def run_python(body: str, where: Path, monkeypatch) -> None:
    import brainencoder as be

    monkeypatch.chdir(where)
    exec(compile(body, "example", "exec"), {"be": be, "__name__": "__example__"})


def _train(root: Path, store, name: str, *extra: str, settings=TINY_TRAIN) -> Path:
    import brainencoder as be

    overrides = [*settings, f"cache_dir={root / 'cache'}", *extra]
    return be.train(None, store=store.path, out=root / name, overrides=overrides).path


@pytest.fixture(scope="session")
def world(store, synth_root, tmp_path_factory) -> dict[str, Path]:
    """The files the examples name, made once: one-epoch runs on the small synthetic data."""
    import h5py

    from brainencoder.cli.main import main

    root = tmp_path_factory.mktemp("doc_world")
    p1 = _train(root, store, "runs/p1")
    p1b = _train(root, store, "runs/p1b", "seed=1")
    p1c = _train(root, store, "runs/p1c", "seed=2")
    start = f"init_from={p1 / 'best.safetensors'}"
    no_model = [s for s in TINY_TRAIN if "model." not in s]  # the architecture comes from p1
    p2 = _train(root, store, "runs/p2", start, settings=no_model)
    ridge = root / "runs/ridge"
    base = ["--store", str(store.path), "--features", "pixels", "--out", str(ridge)]
    assert main(["baseline", "ridge", *base]) == 0
    zip_path = root / "submission.zip"
    assert main(["submit", str(p1), "--data", str(synth_root), "--out", str(zip_path)]) == 0
    demo = root / "demo-output"
    (demo / "runs").mkdir(parents=True)
    (demo / "data").symlink_to(synth_root, target_is_directory=True)
    for name, run in (("phase1", p1), ("phase2", p2), ("phase1-seed2", p1b), ("phase1-seed3", p1c)):
        (demo / "runs" / name).symlink_to(run, target_is_directory=True)
    hdf5 = root / "nsd_stimuli.hdf5"
    with h5py.File(hdf5, "w") as f:
        f["imgBrick"] = np.random.default_rng(0).integers(0, 256, (4, 48, 48, 3), dtype=np.uint8)
    return {
        "DATA_ROOT": synth_root,
        "STORE": store.path,
        "NC_DIR": synth_root / "truth",
        "TRUTH_DIR": synth_root / "truth",
        "my_images": synth_root / "subj01/test_split/test_images",
        "runs/p1": p1,
        "runs/p1b": p1b,
        "runs/p2": p2,
        "runs/ridge": ridge,
        "submission.zip": zip_path,
        "nsd_stimuli.hdf5": hdf5,
        "demo-output": demo,
    }


# --------------------------------------------------------------------------- the rule


def test_every_code_block_is_marked():
    """A bash or python block without a marker (or with a skip without a reason) fails."""
    problems = []
    for path in PAGES:
        for line, lang, _, marker in _blocks(path):
            where = f"{path.relative_to(ROOT)}:{line} ```{lang}"
            if lang not in _CODE:
                continue
            if marker is None:
                problems.append(f"{where}: no <!-- example: run/skip --> line before the fence")
            elif marker.startswith("<!-- example: skip") and not re.search(r"\(.+\)", marker):
                problems.append(f"{where}: a skip states why, in parentheses")
    assert not problems, "\n".join(problems)
    assert _examples(), "no runnable example found"


def test_the_runner_fails_on_a_broken_example(tmp_path, synth_root, monkeypatch):
    """A command that fails (here: a bad option value) fails the block; substitutions apply."""
    (tmp_path / "DATA_ROOT").symlink_to(synth_root, target_is_directory=True)
    good = run_bash("brainencoder validate DATA_ROOT   # every problem [--nothing]\n", tmp_path)
    assert good.returncode == 0, good.stderr[-2000:]
    broken = "brainencoder validate DATA_ROOT\nbrainencoder evaluate runs/none --split nope\n"
    assert run_bash(broken, tmp_path).returncode != 0
    assert _commands(broken) == [
        ["validate", "DATA_ROOT"],
        ["evaluate", "runs/none", "--split", "nope"],
    ]
    assert run_block(broken, tmp_path, monkeypatch)[0] == 2  # argparse's refusal, in process
    assert run_block("brainencoder evaluate runs/none --split val\n", tmp_path, monkeypatch)[0] == 1
    assert _commands("brainencoder validate X | tee log\n") is None  # a pipe: run by bash
    marker = "<!-- example: run; phase1 -> demo; brainencoder train + epochs=1 -->"
    body = _apply("brainencoder train phase1 --out r   # note\nbrainencoder evaluate r\n", marker)
    assert body.splitlines()[0].startswith("brainencoder train demo --out r epochs=1")
    with pytest.raises(AssertionError, match="not in the block"):
        _apply("x\n", "<!-- example: run; phase9 -> demo -->")


# --------------------------------------------------------------------------- the examples


@pytest.mark.parametrize(("where", "lang", "body", "marker"), _examples())
def test_example_runs(where, lang, body, marker, world, tmp_path, monkeypatch):
    body = _apply(body, marker)
    _materialize(world, body, tmp_path)
    if lang.startswith("py"):
        run_python(body, tmp_path, monkeypatch)
        return
    status, output = run_block(body, tmp_path, monkeypatch)
    assert status == 0, f"{where}:\n{output}"
