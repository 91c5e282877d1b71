"""Loading a trained model from a run folder, a model file or an exported folder.

Each function also takes ``hf:ORG/NAME``: an exported folder in the local
Hugging Face cache (:func:`~brainencoder.runs.hub.resolve_source`).
"""

from __future__ import annotations

from typing import Any

from .exported import is_export, load_members
from .hub import resolve_source
from .kinds import MODEL_KINDS, kind_of_file
from .locate import model_file, read_files
from .run import PathLike, Run

__all__ = ["load_model", "model_file", "read_files"]


def load_model(run_or_file: PathLike) -> Any:
    """The model of a run folder, a model file or an exported folder (or ``hf:ORG/NAME``).

    The kind is the run's (:attr:`~brainencoder.runs.run.Run.model_kind`)
    or the one whose format the file's header records
    (:func:`~brainencoder.runs.kinds.kind_of_file`); its entry of
    :data:`~brainencoder.runs.kinds.MODEL_KINDS` loads it.

    Returns
    -------
    ResponseModel
        An :class:`~brainencoder.models.encoder.Encoder` or a
        :class:`~brainencoder.models.ridge.RidgeModel` (an exported ensemble:
        an :class:`~brainencoder.runs.ensemble.EnsembleModel`).
    """
    path = resolve_source(run_or_file)
    if is_export(path):  # its model, or the ensemble of its members
        models, names = load_members(path)
        if len(models) == 1:
            return models[0]
        from .ensemble import EnsembleModel

        return EnsembleModel(models, name=f"ensemble({'+'.join(names)})", labels=names)
    if path.is_dir():
        return Run(path).load_model()
    return MODEL_KINDS.get(kind_of_file(path)).load(path)
