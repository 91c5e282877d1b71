"""The package's wings import only downwards, and no module uses another's private names."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "brainencoder"

# lowest first: a wing may import its own modules and those of the wings before it
WINGS = [
    "util",
    "core",
    "data",
    "models",
    "inference",
    "runs",
    "training",
    "baselines",
    "evaluation",
    "experiments",
    "api",
    "cli",
]
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(["brainencoder", *parts])] = path
    return out


MODULES = _modules()


def _imports(module: str, path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, absolute module imported, names imported from it) of every import in ``path``."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.append((node.lineno, target, [a.name for a in node.names]))
    return [f for f in found if f[1] == "brainencoder" or f[1].startswith("brainencoder.")]


def _wing(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in WINGS else None


def test_every_module_lives_in_a_wing():
    loose = [
        m
        for m in MODULES
        if _wing(m) is None and m not in ("brainencoder", "brainencoder.__main__")
    ]
    assert not loose, f"modules outside the wings {WINGS}: {loose}"


def test_no_wing_imports_a_wing_above_it():
    upward = []
    for module, path in MODULES.items():
        source = _wing(module)
        if source is None:
            continue
        for line, target, names in _imports(module, path):
            targets = [target]
            if target == "brainencoder" or _wing(target) is None:
                # "from .. import x": x may be a wing itself
                targets = [f"{target}.{n}" for n in names] if names else [target]
            for t in targets:
                wing = _wing(t)
                if wing is not None and WINGS.index(wing) > WINGS.index(source):
                    upward.append(f"{path.relative_to(PACKAGE)}:{line} ({source}) imports {t}")
    assert not upward, "imports from a higher wing:\n" + "\n".join(upward)


def test_no_module_imports_another_modules_private_names():
    private = []
    for module, path in MODULES.items():
        for line, target, names in _imports(module, path):
            private += [
                f"{path.relative_to(PACKAGE)}:{line} imports {target}.{n}"
                for n in names
                if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))
            ]
            if any(p.startswith("_") and p != "__init__" for p in target.split(".")[1:]):
                private.append(f"{path.relative_to(PACKAGE)}:{line} imports {target}")
    assert not private, "imports of private names:\n" + "\n".join(private)


def test_modules_are_small():
    sizes = {m: p.read_text().count("\n") for m, p in MODULES.items()}
    large = {m: n for m, n in sizes.items() if n > MAX_LINES}
    assert not large, f"modules over {MAX_LINES} lines: {large}"


def test_the_checks_see_a_violation(tmp_path):
    """The import reader resolves relative imports (a check that reads nothing passes)."""
    path = tmp_path / "mod.py"
    path.write_text("from ...evaluation.compare import _x\nfrom ...util import errors\n")
    found = _imports("brainencoder.core.sub.mod", path)
    assert found == [
        (1, "brainencoder.evaluation.compare", ["_x"]),
        (2, "brainencoder.util", ["errors"]),
    ]


RUN_FILES = {
    "config.yaml",
    "summary.json",
    "best.json",
    "metrics.jsonl",
    "best.safetensors",
    "ridge.safetensors",
    "soup.json",
}


def test_only_the_run_class_writes_run_folders():
    """Outside runs/, a run folder's files are named only as arguments of Run's methods.

    (util/ownership recognises folders written before markers existed by their
    config.yaml: it reads, and util may not import runs.)
    """
    writers = []
    for module, path in MODULES.items():
        if _wing(module) == "runs" or module == "brainencoder.util.ownership":
            continue
        tree = ast.parse(path.read_text())
        allowed = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr in ("write_json", "read_json"):
                    allowed |= {id(a) for a in node.args}
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and node.value in RUN_FILES
                and id(node) not in allowed
            ):
                writers.append(f"{path.relative_to(PACKAGE)}:{node.lineno} names {node.value}")
    assert not writers, "run-folder files handled outside runs/:\n" + "\n".join(writers)
