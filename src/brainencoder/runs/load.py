"""Loading a trained model from a run folder or from a model file."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from ..util.errors import CheckpointError, DataError
from .run import PathLike, Run, load_model_file

__all__ = ["check_held_out", "load_model", "model_file", "read_files"]


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
    from ..models.modelfile import read_model_file

    with contextlib.suppress(CheckpointError):
        _, meta = read_model_file(path)
        if meta.get("format") == "brainencoder-ridge":
            return load_model_file("ridge", path)
    return load_model_file("ridge" if path.name.startswith("ridge") else "encoder", path)


def check_held_out(run_or_file: PathLike, split: str) -> None:
    """Refuse scoring a run on a held-out split it trained on (``train_on: [train, val]``).

    Every command that scores, weights or selects runs on ``val`` or
    ``testval`` (evaluate, compare, submit's validation weights, soup) calls
    this; a model file records no splits and passes.

    Raises
    ------
    DataError
        Naming the run, the split and what to do.
    """
    path = Path(run_or_file)
    if split not in ("val", "testval") or not path.is_dir():
        return
    trained = Run(path).config.get("train_on", ["train"])
    if isinstance(trained, list) and split in trained:
        raise DataError(
            f"{path} trained on the {split} images (train_on: {trained}), so its {split} "
            "score would not be held out; use a run trained on train only, or the testval "
            "or test split"
        )
