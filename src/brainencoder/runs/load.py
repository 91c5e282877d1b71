"""Loading a trained model from a run folder or from a model file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .run import PathLike, Run, load_model_file

__all__ = ["load_model", "model_file", "read_files"]


def model_file(run_or_file: PathLike) -> Path:
    """The model file of a run folder, or the file itself."""
    path = Path(run_or_file)
    return Run(path).model_file() if path.is_dir() else path


def read_files(run_or_file: PathLike) -> list[Path]:
    """The files a command reads of a run folder or model file: its header and model.

    These are the run's entries among a command's inputs in
    :func:`~brainencoder.util.ownership.check_output_location`: an output folder
    may not be, hold or lie inside them (so it never holds the run), while a
    page written inside a run folder (``RUN/explore-faces``, linked by the
    run's report) is allowed.
    """
    path = Path(run_or_file)
    return [path / "config.yaml", model_file(path)] if path.is_dir() else [path]


def load_model(run_or_file: PathLike) -> Any:
    """The model of a run folder or of a model file (encoder or ridge, by its header).

    Returns
    -------
    ResponseModel
        An :class:`~brainencoder.models.encoder.Encoder` or a
        :class:`~brainencoder.models.ridge.RidgeModel`.
    """
    path = Path(run_or_file)
    if path.is_dir():
        return Run(path).load_model()
    from ..models.modelfile import read_metadata

    ridge = read_metadata(path).get("format") == "brainencoder-ridge"  # the header says
    return load_model_file("ridge" if ridge else "encoder", path)
