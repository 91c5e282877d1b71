"""Which folders brainencoder may replace: only its own, never the user's data.

Every folder a command creates as a whole (a store, a training run, a ridge
run) gets a small marker file, ``.brainencoder``, naming its kind. ``--overwrite``
replaces a folder only if it is empty or carries the marker of the same kind
(folders written before markers existed are recognised by their own files),
and never a folder that holds, contains or lies inside the command's inputs or
the current working directory. Anything else is refused before any work,
with nothing touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import BrainEncoderError

__all__ = [
    "MARKER",
    "build_owned",
    "check_output_file",
    "check_output_location",
    "check_replaceable",
    "mark_owned",
    "owned_kind",
    "replace_owned",
]

MARKER = ".brainencoder"
KINDS = ("store", "run", "ridge-run", "explore", "compare", "export", "synthesize")

# the files of output folders written before markers existed (only these: a folder
# holding anything else is not recognised), and the file that identifies them
_LEGACY_PAGES = {
    "explore": (
        {"ranking.csv", "montage.png", "histogram.png", "map.png", "index.html", "query.json"},
        "query.json",
    ),
    "compare": (
        {"comparison.csv", "roi_differences.png", "difference_map.png", "index.html"},
        "comparison.csv",
    ),
}
_COMPARE_HEADER = "run,subject,roi,metric,value,diff,ci_low,ci_high"


class UnsafeOverwriteError(BrainEncoderError):
    """--overwrite was asked for a folder that brainencoder did not write."""


def mark_owned(folder: str | os.PathLike, kind: str) -> None:
    """Mark ``folder`` (existing) as a brainencoder folder of ``kind``."""
    from .fileio import write_json_atomic
    from .version import __version__

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
    write_json_atomic(Path(folder) / MARKER, {"kind": kind, "brainencoder_version": __version__})


def _legacy_page_kind(folder: Path) -> str | None:
    """``explore`` or ``compare``: an output folder of theirs written before markers existed."""
    try:
        names = {p.name for p in folder.iterdir()}
    except OSError:
        return None
    for kind, (files, key) in _LEGACY_PAGES.items():
        path = folder / key
        if not names <= files or not path.is_file() or path.is_symlink():
            continue
        try:
            with open(path, encoding="utf-8") as fh:
                head = fh.read(4096)
        except (OSError, UnicodeDecodeError):
            return None
        if kind == "compare" and head.splitlines()[:1] == [_COMPARE_HEADER]:
            return kind
        if kind == "explore":
            try:
                query = json.loads(head)
            except ValueError:
                return None
            if isinstance(query, dict) and {"run", "images", "subject", "rois", "top"} <= set(
                query
            ):
                return kind
    return None


def _legacy_kind(folder: Path) -> str | None:
    """Kind of a folder written before markers existed, from its own files."""
    plan = folder / "plan.json"
    if plan.is_file():
        try:
            data = json.loads(plan.read_text())
        except (OSError, ValueError):
            return None
        if isinstance(data, dict) and {"format_version", "fingerprint", "options"} <= set(data):
            return "store"
    config = folder / "config.yaml"
    if config.is_file():
        try:
            head = config.read_text()[:2000]
        except (OSError, UnicodeDecodeError):
            return None
        if head.startswith("run:\n") and "brainencoder_version:" in head:
            return "ridge-run" if "\nsolver:" in config.read_text() else "run"
    return _legacy_page_kind(folder)


def owned_kind(folder: str | os.PathLike) -> str | None:
    """The kind of brainencoder folder ``folder`` is, or None."""
    folder = Path(folder)
    marker = folder / MARKER
    if marker.is_file() and not marker.is_symlink():
        try:
            kind = json.loads(marker.read_text()).get("kind")
        except (OSError, ValueError, AttributeError):
            return None
        return kind if kind in KINDS else None
    return _legacy_kind(folder)


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def check_output_file(path: str | os.PathLike | None, suffixes: tuple[str, ...] = ()) -> None:
    """Before any work: ``path`` must not be an existing folder (or have another suffix).

    Raises
    ------
    UnsafeOverwriteError
    """
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise UnsafeOverwriteError(f"{path}: is a folder; --out must be a file path")
    if suffixes and path.suffix not in suffixes:
        raise UnsafeOverwriteError(f"{path}: --out must end in {' or '.join(suffixes)}")


def check_output_location(
    folder: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = ()
) -> None:
    """Raise if output ``folder`` is or contains the current folder, or overlaps an input.

    Parameters
    ----------
    folder : path
    inputs : iterable of path or None
        The command's inputs (data, store, model files): ``folder`` may not
        hold, contain or lie inside any of them.

    Raises
    ------
    UnsafeOverwriteError
    """
    folder = Path(folder)
    target = folder.resolve()
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise UnsafeOverwriteError(
            f"refusing to write into {folder}: it is or contains the current folder; "
            "choose a separate output folder"
        )
    for item in inputs:
        if item is None:
            continue
        if _overlaps(target, Path(item).resolve()):
            raise UnsafeOverwriteError(
                f"refusing to write into {folder}: it holds, contains or lies inside the "
                f"input {item}; choose a separate output folder"
            )


def check_replaceable(
    folder: str | os.PathLike, kind: str, inputs: Iterable[str | os.PathLike | None] = ()
) -> None:
    """Raise unless ``--overwrite`` may remove ``folder`` to write a new ``kind`` there.

    Parameters
    ----------
    folder : path
        The output folder.
    kind : {"store", "run", "ridge-run", "explore", "compare", "export"}
    inputs : iterable of path or None
        See :func:`check_output_location`.

    Raises
    ------
    UnsafeOverwriteError
        Naming the folder and why; nothing is touched.
    """
    check_output_location(folder, inputs)
    folder = Path(folder)
    if not folder.exists():
        return
    if folder.is_symlink() or not folder.is_dir():
        raise UnsafeOverwriteError(f"{folder} exists and is not a folder; choose another path")
    if not any(folder.iterdir()):
        return
    found = owned_kind(folder)
    if found != kind:
        what = f"a brainencoder {found}" if found else "files brainencoder did not write"
        raise UnsafeOverwriteError(
            f"refusing to replace {folder}: it holds {what}, not a brainencoder {kind}; "
            "--overwrite only replaces a folder brainencoder wrote itself. Choose another "
            "folder, or move or delete this one yourself"
        )


def replace_owned(
    folder: str | os.PathLike, kind: str, inputs: Iterable[str | os.PathLike | None] = ()
) -> None:
    """Remove ``folder`` after :func:`check_replaceable` (nothing if it does not exist)."""
    check_replaceable(folder, kind, inputs)
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)


@contextlib.contextmanager
def build_owned(
    folder: str | os.PathLike, kind: str, inputs: Iterable[str | os.PathLike | None] = ()
) -> Iterator[Path]:
    """A folder of ``kind`` written aside (``.NAME.tmp``) and moved to ``folder`` when complete.

    ``folder`` is checked with :func:`check_replaceable` first (nothing is
    touched if it may not be replaced); a failure or an interrupt inside the
    block removes the folder written aside and leaves ``folder`` as it was.
    On success, ``folder`` (empty, or a previous folder of ``kind``) is
    replaced by the new one.

    Yields
    ------
    Path
        The folder to write into (marked as ``kind``).

    Raises
    ------
    UnsafeOverwriteError
        As :func:`check_replaceable`, for ``folder`` or a leftover ``.NAME.tmp``.
    """
    final = Path(folder)
    inputs = list(inputs)
    check_replaceable(final, kind, inputs)
    work = final.parent / f".{final.name}.tmp"
    replace_owned(work, kind, inputs)  # left by a killed command
    work.mkdir(parents=True)
    mark_owned(work, kind)
    try:
        yield work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    replace_owned(final, kind, inputs)
    os.replace(work, final)
