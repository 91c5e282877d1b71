"""Reading a run folder's ``config.yaml``: the header (``run:``) and the settings.

:class:`~brainencoder.runs.run.Run` writes the file and reads it through these
functions; modules that need a run's header without the rest of
:class:`~brainencoder.runs.run.Run` (:mod:`.stores`) read it here too, so the
header is read in one place and no module of this package imports
:mod:`.run` back.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..util.errors import CheckpointError, DataError
from ..util.fileio import read_yaml_mapping

__all__ = ["CONFIG_FILE", "read_config", "read_header"]

#: the run folder's header and settings
CONFIG_FILE = "config.yaml"


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The whole ``config.yaml`` of a run folder (header and settings).

    Parameters
    ----------
    folder : path
        The run folder.

    Returns
    -------
    dict

    Raises
    ------
    CheckpointError
        No ``config.yaml`` (not a run folder), or one that is not a small YAML mapping.
    """
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not path.exists():
        raise CheckpointError(f"{folder}: no {CONFIG_FILE}; not a run directory")
    try:
        return read_yaml_mapping(path, "run config")
    except DataError as exc:
        raise CheckpointError(str(exc)) from None


def read_header(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``run:`` block of a run folder's ``config.yaml`` ({} if it has none).

    Parameters
    ----------
    folder : path
        The run folder.

    Returns
    -------
    dict

    Raises
    ------
    CheckpointError
        As :func:`read_config`, or a ``run:`` entry that is not a mapping.
    """
    header = read_config(folder).get("run", {})
    if not isinstance(header, dict):
        raise CheckpointError(f"{Path(folder) / CONFIG_FILE}: damaged run header")
    return header
