"""The run folder: the one place that writes and reads what a trained model leaves behind.

A run folder::

    RUN/.brainencoder            ownership marker (only such folders are ever replaced)
    RUN/config.yaml              header (``run:``: model kind, version, git revision, store
                                 path and identity) followed by the settings that made it
    RUN/best.safetensors         the model (``ridge.safetensors`` for a ridge baseline)
    RUN/best.json                the epoch and metrics of the best model (training)
    RUN/metrics.jsonl            one JSON record per logged step and per epoch
    RUN/checkpoints/             resumable checkpoints (training; see runs.checkpoint)
    RUN/summary.json             written last: the run finished
    RUN/tensorboard/, RUN/wandb/ the experiment trackers' logs (training with
                                 ``tensorboard: true`` / ``wandb: true``)

Training, ``adapt``, ridge baselines, soups and ``import-original`` create
their folders through :class:`Run`; ``evaluate``, ``predict``, ``submit``,
``plot``, ``report``, ``compare``, ``explore`` and ``soup`` read them through it.
The kind of model a run holds is recorded in the header (``model_kind``);
what a kind's model file is called, how it is saved and loaded and which
folders ``--overwrite`` may replace is its entry in
:data:`~brainencoder.runs.kinds.MODEL_KINDS`, which :class:`Run` alone reads.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

from ..util.errors import CheckpointError
from ..util.fileio import read_json, write_bytes_atomic, write_json_atomic
from ..util.ownership import (
    build_owned,
    check_output_location,
    check_replaceable,
    mark_owned,
    owned_kind,
    replace_owned,
)
from ..util.version import __version__, git_revision
from . import checkpoint, metrics_log, stores
from .header import CONFIG_FILE, read_config, read_header
from .kinds import DEFAULT_KIND, MODEL_KINDS, kind_in_folder, kind_of_model

__all__ = ["PathLike", "Run"]

PathLike = str | os.PathLike


class Run:
    """One run folder.

    Parameters
    ----------
    path : path
        The folder (it need not exist yet).
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # ------------------------------------------------------------------ creating
    @classmethod
    def create(
        cls,
        path: PathLike,
        inputs: Iterable[PathLike | None] = (),
        overwrite: bool = False,
        resume: bool = False,
        kind: str = DEFAULT_KIND,
    ) -> Run:
        """Claim ``path`` for a run written in place (training): checked, marked, empty.

        Parameters
        ----------
        path : path
        inputs : iterable of path
            The command's inputs: the folder may not hold, contain or lie inside one.
        overwrite, resume : bool, default=False
            Replace a run brainencoder wrote there (never anything else), or keep
            the unfinished run there to continue it.
        kind : str, default="encoder"
            A registered model kind (:data:`~brainencoder.runs.kinds.MODEL_KINDS`).

        Raises
        ------
        CheckpointError, UnsafeOverwriteError
            As :meth:`check_target`; or nothing to resume.
        """
        run = cls(path)
        owner = _owner(kind)
        inputs = list(inputs)
        check_output_location(run.path, inputs)
        if resume:
            if run.finished:
                raise CheckpointError(f"{run.path}: the run already finished; nothing to resume")
            if run.latest_checkpoint() is None:
                raise CheckpointError(f"{run.path}: no checkpoint to resume from")
        elif run.path.exists() and any(run.path.iterdir()):
            if not overwrite:
                what = "a finished run" if run.finished else "an unfinished run"
                hint = "" if run.finished else " or --resume to continue it"
                raise CheckpointError(
                    f"{run.path} already holds {what}; pass --overwrite to replace it{hint}"
                )
            replace_owned(run.path, owner, inputs)
        run.path.mkdir(parents=True, exist_ok=True)
        mark_owned(run.path, owner)
        return run

    @classmethod
    @contextlib.contextmanager
    def build(
        cls,
        path: PathLike,
        inputs: Iterable[PathLike | None] = (),
        overwrite: bool = False,
        kind: str = DEFAULT_KIND,
    ) -> Iterator[Run]:
        """A run written aside (``.NAME.tmp``) and moved to ``path`` only when complete.

        Everything is checked before any work; a failure (or an interrupt) leaves
        ``path`` as it was and removes the folder written aside.

        Yields
        ------
        Run
            The folder being built; its ``path`` is the temporary folder.
        """
        inputs = list(inputs)
        cls.check_target(path, inputs, overwrite, kind)
        with build_owned(path, _owner(kind), inputs) as work:
            yield cls(work)

    @staticmethod
    def check_target(
        path: PathLike, inputs: Iterable[PathLike | None], overwrite: bool, kind: str = DEFAULT_KIND
    ) -> None:
        """Before any work: may a new run of ``kind`` be written at ``path``?

        Raises
        ------
        CheckpointError
            ``path`` holds files and ``overwrite`` is not set.
        UnsafeOverwriteError
            ``path`` overlaps an input or holds files brainencoder did not write.
        """
        path, inputs = Path(path), list(inputs)
        check_output_location(path, inputs)
        if path.exists() and any(path.iterdir()):
            if not overwrite:
                what = "a run" if owned_kind(path) == _owner(kind) else "files"
                raise CheckpointError(
                    f"{path} already holds {what}; pass --overwrite to replace it"
                )
            check_replaceable(path, _owner(kind), inputs)

    def write_header(
        self,
        kind: str,
        store: Any | None,
        settings: Mapping[str, Any],
        store_path: PathLike | None = None,
        **extra: Any,
    ) -> None:
        """Write ``config.yaml``: the header (``run:``) and the settings that made the run.

        Parameters
        ----------
        kind : str
            The kind of model the run holds (``"encoder"``, ``"ridge"``: a
            registered model kind, :data:`~brainencoder.runs.kinds.MODEL_KINDS`).
        store : Store, mapping or None
            The store the model was trained on (path and identity are recorded),
            or a record copied from another run's header.
        settings : mapping
            The resolved configuration (training config, adapt settings, ...).
        store_path : path, optional
            Where the store will be when it is not where it is now (a store inside
            a run being built aside).
        **extra
            More header fields (``world_size``, ``adapted_from``, ``soup_of``, ...).
        """
        _owner(kind)
        header: dict[str, Any] = {
            "model_kind": kind,
            "brainencoder_version": __version__,
            "git_revision": git_revision(),
            "torch_version": str(torch.__version__),
        }
        if store is not None:
            header.update(stores.store_record(store, store_path))
        header.update(extra)
        text = yaml.safe_dump({"run": header, **dict(settings)}, sort_keys=False)
        write_bytes_atomic(self.config_file, text.encode())

    # ------------------------------------------------------------------ reading
    @property
    def config(self) -> dict[str, Any]:
        """The whole ``config.yaml`` (header and settings)."""
        return read_config(self.path)

    @property
    def config_file(self) -> Path:
        """``config.yaml``: the header and the settings (see :attr:`config`)."""
        return self.path / CONFIG_FILE

    @property
    def header(self) -> dict[str, Any]:
        """The ``run:`` block of ``config.yaml``."""
        return read_header(self.path)

    @property
    def model_kind(self) -> str:
        """``"encoder"``, ``"ridge"``, ...: from the header, else from the model file present.

        Raises
        ------
        CheckpointError
            The header records a kind that is not registered.
        """
        try:
            kind = self.header.get("model_kind")
        except CheckpointError:
            kind = None
        if kind is None:
            return kind_in_folder(self.path)
        if kind not in MODEL_KINDS:
            raise CheckpointError(
                f"{self.config_file}: unknown model kind {kind!r} (known: {', '.join(MODEL_KINDS)})"
            )
        return kind

    @property
    def finished(self) -> bool:
        """Whether ``summary.json`` was written (the run completed)."""
        return (self.path / "summary.json").exists()

    def model_file(self) -> Path:
        """The model to predict with: the run's model, else its latest checkpoint's."""
        kind = MODEL_KINDS.get(self.model_kind)
        path = self.path / kind.file_name
        if path.exists() or not kind.from_checkpoints:
            return path
        latest = self.latest_checkpoint()
        if latest is None:
            raise CheckpointError(
                f"{self.path}: no model found (not a run directory, or the "
                "run has not finished an epoch yet)"
            )
        return latest / "model.safetensors"

    def load_model(self) -> Any:
        """The run's model (a :class:`~brainencoder.models.response.ResponseModel`)."""
        return MODEL_KINDS.get(self.model_kind).load(self.model_file())

    def store_path(self) -> Path:
        """The store the run was trained on (from the header); it must still exist."""
        try:
            header = self.header
        except CheckpointError as exc:
            raise CheckpointError(f"{exc}; pass --store STORE") from None
        if not isinstance(header.get("store"), str):
            raise CheckpointError(f"{self.config_file}: no store recorded; pass --store")
        path = Path(header["store"])
        if not path.exists():
            raise CheckpointError(
                f"{self.path}: the store it was trained on, {path}, is gone (moved or "
                "deleted); pass --store NEW_PATH"
            )
        return path

    def check_store(self, store: Any) -> None:
        """Refuse a store that is none of the run's: other data, image size, splits or space.

        Runs written before stores had an identity are checked on subjects only
        (by the caller).

        Raises
        ------
        CheckpointError
            Naming the store, the run and what differs.
        """
        try:
            header = self.header
        except CheckpointError:
            return  # not a run folder: nothing recorded to compare
        if not isinstance(header.get("store_identity"), dict) and not header.get("subject_stores"):
            return
        stores.subject_stores(self.path, header, store.names, store)

    def subject_stores(self, subjects: list[str], store: Any = None) -> list[tuple[str, Any]]:
        """The subjects to score, each with its own store (see :func:`.stores.subject_stores`)."""
        try:
            header = self.header
        except CheckpointError as exc:
            if store is None:  # nothing else says where the data are
                raise CheckpointError(f"{exc}; pass --store STORE") from None
            header = {}
        return stores.subject_stores(self.path, header, subjects, store)

    # ------------------------------------------------------------------ writing
    def save_model(self, model: Any, meta: Mapping[str, str] | None = None) -> Path:
        """Write the run's model file atomically (``best.safetensors`` / ``ridge.safetensors``).

        Parameters
        ----------
        model : Encoder or RidgeModel
            A model of a registered kind (:data:`~brainencoder.runs.kinds.MODEL_KINDS`),
            which names the file and saves it.
        meta : mapping of str to str, optional
            Extra metadata of the model file (``store_image_size``); the model's
            ``training_record`` (:mod:`.provenance`) is saved with it.

        Returns
        -------
        Path
            The model file written.
        """
        kind = MODEL_KINDS.get(kind_of_model(model))
        path = self.path / kind.file_name
        kind.save(model, path, dict(meta or {}))
        return path

    def write_json(self, name: str, data: Mapping[str, Any]) -> None:
        """Write ``name`` (``best.json``, ``soup.json``, ...) atomically."""
        write_json_atomic(self.path / name, dict(data))

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """Write ``summary.json`` (last: it marks the run finished)."""
        self.write_json("summary.json", summary)

    def summary(self) -> dict[str, Any]:
        """``summary.json`` ({} while the run is unfinished)."""
        path = self.path / "summary.json"
        return read_json(path, "run summary") if path.exists() else {}

    # ------------------------------------------------------------------ metrics
    def append_metrics(self, record: Mapping[str, Any]) -> None:
        """Append one record to ``metrics.jsonl`` (flushed to disk)."""
        metrics_log.append(self.path / "metrics.jsonl", record)

    def truncate_metrics(self, step: int) -> None:
        """Drop records logged after ``step`` (they will be logged again on resume)."""
        metrics_log.truncate(self.path / "metrics.jsonl", step)

    def read_metrics(self) -> list[dict[str, Any]]:
        """The records of ``metrics.jsonl``; cut or damaged lines are skipped with a warning."""
        return metrics_log.read(self.path / "metrics.jsonl")

    @property
    def tensorboard_dir(self) -> Path:
        """TensorBoard's event files (``tensorboard: true``; W&B keeps ``wandb/`` itself)."""
        return self.path / "tensorboard"

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoints(self) -> Path:
        """The folder of resumable checkpoints."""
        return self.path / "checkpoints"

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint folder, or None."""
        return checkpoint.latest_checkpoint(self.checkpoints)

    def save_checkpoint(self, model: Any, optimizer: Any, scaler: Any, state: dict) -> Path:
        """Write a complete checkpoint and point ``latest.json`` to it."""
        return checkpoint.save_checkpoint(self.checkpoints, model, optimizer, scaler, state)


def _owner(kind: str) -> str:
    """The ownership kind of the folders of runs of model kind ``kind``."""
    return MODEL_KINDS.get(kind).owner
