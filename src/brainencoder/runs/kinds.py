"""Model kinds: what a run folder or a model file holds, decided in one place.

Every kind of model a run can hold is one entry of :data:`MODEL_KINDS` (a
:class:`~brainencoder.util.registry.Registry`): the model file of its run
folders, the ownership kind of those folders (what ``--overwrite`` may
replace), the ``format`` its model files record in their header, the class of
its models, and how one is saved and loaded. :class:`~brainencoder.runs.run.Run`
(creating, saving, reading a folder) and
:func:`~brainencoder.runs.load.load_model` (a run folder or a bare model file)
read these entries and nothing else. The built-in kinds:

- ``encoder``: ``best.safetensors`` in a ``run`` folder, header format
  ``brainencoder-model`` (:class:`~brainencoder.models.encoder.Encoder`);
- ``ridge``: ``ridge.safetensors`` in a ``ridge-run`` folder, header format
  ``brainencoder-ridge`` (:class:`~brainencoder.models.ridge.RidgeModel`).

A run records its kind in its header (``model_kind``); a folder written before
kinds were recorded is recognised by the model file it holds
(:func:`kind_in_folder`), a bare model file by its header (:func:`kind_of_file`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..models.encoder import Encoder
from ..models.modelfile import load_encoder, read_metadata, save_encoder
from ..models.ridge import RidgeModel
from ..util.errors import CheckpointError, ConfigError
from ..util.registry import Registry

__all__ = [
    "DEFAULT_KIND",
    "MODEL_KINDS",
    "ModelKind",
    "kind_in_folder",
    "kind_of_file",
    "kind_of_model",
]


@dataclass(frozen=True)
class ModelKind:
    """One kind of model a run holds.

    Attributes
    ----------
    file_name : str
        The model file in a run folder (``best.safetensors``).
    owner : str
        The ownership kind of its run folders (see :mod:`brainencoder.util.ownership`).
    file_format : str
        The ``format`` entry of its model files' safetensors header.
    model_type : type
        The class of its models (what :meth:`~brainencoder.runs.run.Run.save_model` gets).
    load : callable
        ``load(path)``: the model of a model file of this kind.
    save : callable
        ``save(model, path, metadata)``: write the model file atomically, with
        ``metadata`` (str to str) added to its header.
    from_checkpoints : bool, default=False
        Whether a run of this kind keeps resumable checkpoints, whose latest
        model stands in for the model file until one is written (training).
    """

    file_name: str
    owner: str
    file_format: str
    model_type: type
    load: Callable[[Path], Any]
    save: Callable[[Any, Path, dict[str, str]], None]
    from_checkpoints: bool = False


#: the kinds of model a run holds, by the name its header records (``model_kind``)
MODEL_KINDS: Registry[ModelKind] = Registry("model kind")
#: the kind of runs that record none and hold no model file yet (training before its first epoch)
DEFAULT_KIND = "encoder"


def _save_ridge(model: RidgeModel, path: Path, metadata: dict[str, str]) -> None:
    model.save(path, metadata)


MODEL_KINDS.register(
    "encoder",
    ModelKind(
        file_name="best.safetensors",
        owner="run",
        file_format="brainencoder-model",
        model_type=Encoder,
        load=load_encoder,
        save=save_encoder,
        from_checkpoints=True,
    ),
)
MODEL_KINDS.register(
    "ridge",
    ModelKind(
        file_name="ridge.safetensors",
        owner="ridge-run",
        file_format="brainencoder-ridge",
        model_type=RidgeModel,
        load=RidgeModel.load,
        save=_save_ridge,
    ),
)


def kind_of_model(model: Any) -> str:
    """The kind whose models ``model`` is an instance of.

    Raises
    ------
    ConfigError
        No registered kind holds such a model.
    """
    for name in MODEL_KINDS:
        if isinstance(model, MODEL_KINDS.get(name).model_type):
            return name
    raise ConfigError(
        f"no model kind holds a {type(model).__name__}; registered: {MODEL_KINDS.names()}"
    )


def kind_of_file(path: str | os.PathLike) -> str:
    """The kind of a model file, by the ``format`` its header records.

    Raises
    ------
    CheckpointError
        An unreadable file, or a header whose format is no registered kind's.
    """
    fmt = read_metadata(path).get("format")
    for name in MODEL_KINDS:
        if MODEL_KINDS.get(name).file_format == fmt:
            return name
    raise CheckpointError(f"{path}: not a brainencoder model file")


def kind_in_folder(folder: str | os.PathLike) -> str:
    """The kind of a run folder whose header records none: by the model file it holds.

    A folder with no model file, or with the files of several kinds, is of
    :data:`DEFAULT_KIND` (an encoder run keeps its model in checkpoints until
    its first epoch ends).
    """
    found = [n for n in MODEL_KINDS if (Path(folder) / MODEL_KINDS.get(n).file_name).exists()]
    return found[0] if len(found) == 1 else DEFAULT_KIND
