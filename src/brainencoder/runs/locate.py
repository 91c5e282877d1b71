"""Where a model is: the model file and the files a command reads of a run argument.

A run argument is a run folder, a model file, a folder written by ``export``
or ``hf:ORG/NAME`` (such a folder in the local Hugging Face cache,
:func:`~brainencoder.runs.hub.resolve_source`). Loading is
:mod:`brainencoder.runs.load`'s; this module only locates, so
:mod:`brainencoder.runs.provenance` reads a model's record without loading it.
"""

from __future__ import annotations

from pathlib import Path

from .exported import MANIFEST, is_export, member_files
from .hub import resolve_source
from .run import PathLike, Run

__all__ = ["model_file", "read_files"]


def model_file(run_or_file: PathLike) -> Path:
    """The model file of a run folder, or the file itself (an exported folder: its first).

    The members of an exported ensemble all carry the ensemble's training
    record, so the first one answers what the ensemble trained on.
    """
    path = resolve_source(run_or_file)
    if is_export(path):
        return member_files(path)[0]
    return Run(path).model_file() if path.is_dir() else path


def read_files(run_or_file: PathLike) -> list[Path]:
    """The files a command reads of a run folder or model file: its header and model.

    These are the run's entries among a command's inputs in
    :func:`~brainencoder.util.ownership.check_output_location`: an output folder
    may not be, hold or lie inside them (so it never holds the run), while a
    page written inside a run folder (``RUN/explore-faces``, linked by the
    run's report) is allowed. An exported folder: its manifest and model files.
    """
    path = resolve_source(run_or_file)
    if is_export(path):
        return [path / MANIFEST, *member_files(path)]
    return [path / "config.yaml", model_file(path)] if path.is_dir() else [path]
