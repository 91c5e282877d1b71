"""Sharing a trained model: ``be.export`` writes a folder to upload to a model hub as it is."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..util.errors import ConfigError

__all__ = ["export"]


def export(
    runs: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    data: str | Path | None = None,
    repo_id: str | None = None,
    license: str = "other",
    datasets: Sequence[str] = ("algonauts-2023",),
    tags: Sequence[str] = (),
    overwrite: bool = False,
) -> Path:
    """Export runs as a self-contained folder for a model hub (``brainencoder export``).

    The folder holds every member's model file (safetensors), each subject's
    vertex masks and ROI labels with their names, a manifest
    (``brainencoder.json``) and a model card (``README.md``, Hugging Face
    convention); nothing in it names a path of this machine. ``be.load``
    takes it as a path, or once uploaded and downloaded as ``"hf:ORG/NAME"``,
    without the store or the challenge's files.

    Parameters
    ----------
    runs : path or sequence of path
        A finished run folder, model file or exported folder (or
        ``"hf:ORG/NAME"``); several: their ensemble (the mean prediction).
    out : path
        The folder to write; written aside and moved into place when complete.
    data : path, optional
        The challenge-layout data (or an exported folder) holding the subjects'
        ROI label files; default: the data each run's store was prepared from.
    repo_id : str, optional
        ``"ORG/NAME"`` the folder will be uploaded as: the card's loading lines.
    license : str, default="other"
        The card's ``license`` field (a Hugging Face license id).
    datasets : sequence of str, default=("algonauts-2023",)
        The card's ``datasets`` field.
    tags : sequence of str, default=()
        Tags added to the card's own (``brainencoder``, ``fmri``, ...).
    overwrite : bool, default=False
        Replace ``out`` if brainencoder exported it (never other files).

    Returns
    -------
    Path
        The folder written.

    Raises
    ------
    CheckpointError
        ``out`` holds files and ``overwrite`` is not set, or a run is unfinished.
    UnsafeOverwriteError
        ``out`` holds files brainencoder did not export, or overlaps an input.
    DataError
        A subject's ROI label files cannot be found (pass ``data``), or hold
        other vertices than the model's.

    Examples
    --------
    >>> import brainencoder as be                                          # doctest: +SKIP
    >>> be.export(["runs/p1", "runs/p1-seed2"], "share/demo", repo_id="me/demo")  # doctest: +SKIP
    >>> model = be.load("share/demo")                                      # doctest: +SKIP
    """
    from ..runs.export import export_model

    sources = [runs] if isinstance(runs, str | Path) else list(runs)
    for key, values in (("datasets", datasets), ("tags", tags)):
        if isinstance(values, str) or not all(isinstance(v, str) and v for v in values):
            raise ConfigError(f"'{key}' must be a list of names; got {values!r}")
    if not isinstance(license, str) or not license:
        raise ConfigError(f"'license' must be a license id such as 'mit'; got {license!r}")
    return export_model(
        sources,
        out,
        data=data,
        repo_id=repo_id,
        license=license,
        datasets=list(datasets),
        tags=list(tags),
        overwrite=overwrite,
    )
