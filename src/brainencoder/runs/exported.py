"""An exported model folder (``brainencoder export``), read as untrusted input.

The folder is what someone uploads to a model hub as it is, and what another
person receives::

    EXPORT/README.md                   the model card (Hugging Face convention)
    EXPORT/brainencoder.json           what the folder holds: format, members, subjects, ROI groups
    EXPORT/model.safetensors           the model; an ensemble: model-1.safetensors, model-2...
    EXPORT/rois/SUBJ/{lh,rh}.all-vertices_fsaverage_space.npy   the subject's vertices (bool)
    EXPORT/rois/SUBJ/{lh,rh}.GROUP_challenge_space.npy          ROI label of each column (int)
    EXPORT/rois/SUBJ/mapping_GROUP.json                         label value -> ROI name

Nothing in it is trusted: the manifest is bounded JSON whose names must be
plain file-name parts (the files opened are named here, from them, never
taken from the folder as paths); every file must be a file inside the folder
(or, for a Hugging Face cache snapshot, inside its repository's folder, where
the snapshot's links point); ``.npy`` files are read without pickles and
checked for type and shape against the model's vertices; model files are
checked as every model file is (:mod:`brainencoder.models.modelfile`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.space import HEMIS
from ..util.errors import CheckpointError, DataError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "ROIS",
    "ExportedLayout",
    "ExportedSubject",
    "is_export",
    "is_plain_name",
    "load_members",
    "member_file_name",
    "member_files",
    "open_roi_layout",
    "read_manifest",
]

MANIFEST = "brainencoder.json"
FORMAT = "brainencoder-export"
FORMAT_VERSION = 1
ROIS = "rois"
MAX_MEMBERS = 64
_MAX_JSON = 1 << 20
_MAX_NPY = 64 << 20
_MAX_ROI_NAMES = 10_000
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_LABEL = re.compile(r"^-?\d{1,9}$")
_AGAIN = "download it again, or ask for a new export"


def member_file_name(index: int, n_members: int) -> str:
    """Member ``index``'s file (0-based): ``model.safetensors``, or ``model-1...`` of several."""
    return "model.safetensors" if n_members == 1 else f"model-{index + 1}.safetensors"


def is_plain_name(value: Any) -> bool:
    """Whether ``value`` is a plain name a file of the folder may be named from."""
    return isinstance(value, str) and bool(_NAME.match(value)) and ".." not in value


def is_export(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder written by ``brainencoder export`` (it holds the manifest)."""
    path = Path(path)
    return path.is_dir() and (path / MANIFEST).is_file()


def _damaged(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{path}: {what}; {_AGAIN}")


def _allowed_root(folder: Path) -> Path:
    """Where the folder's files may lie: the folder; for a cache snapshot, its repository's."""
    real = folder.resolve()
    if real.parent.name == "snapshots" and real.parent.parent.name.startswith("models--"):
        return real.parent.parent  # snapshots/REV/FILE links to ../../blobs/HASH
    return real


def _safe_file(folder: Path, relative: str, limit: int) -> Path:
    """``folder/relative``: a file inside the folder, at most ``limit`` bytes."""
    path = folder / relative
    if not path.is_file():
        raise _damaged(path, "missing from the exported folder, or not a file")
    if not path.resolve().is_relative_to(_allowed_root(folder)):
        raise _damaged(path, "points outside the exported folder; it is never read")
    if path.stat().st_size > limit:
        raise _damaged(path, f"larger than {limit >> 20} MiB, too large for what it holds")
    return path


def _read_json(folder: Path, relative: str) -> Any:
    path = _safe_file(folder, relative, _MAX_JSON)
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise _damaged(path, f"unreadable JSON ({' '.join(str(exc).split())[:120]})") from None


def _read_npy(path: Path) -> np.ndarray:
    """A plain ``.npy`` array (never a pickle, never an ``.npz``), its header checked first.

    The shape the header claims must fit the file, so nothing is allocated for
    an array the file does not hold.
    """
    fmt = np.lib.format
    try:
        with path.open("rb") as fh:
            version = fmt.read_magic(fh)
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = read(fh)
            n_bytes = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
            if dtype.hasobject:
                raise ValueError("it holds Python objects, a pickle, which is never loaded")
            if n_bytes > path.stat().st_size:
                raise ValueError(f"its header claims {dtype} {shape}, more than the file holds")
            fh.seek(0)
            return fmt.read_array(fh, allow_pickle=False)
    except (OSError, ValueError, EOFError, TypeError) as exc:
        raise _damaged(path, f"not a readable .npy array ({str(exc)[:120]})") from None


def _name(value: Any, path: Path, what: str) -> str:
    if not is_plain_name(value):
        raise _damaged(path, f"{what} {str(value)[:40]!r} is not a plain name")
    return value


@dataclass
class ExportManifest:
    """What an exported folder holds, checked.

    Attributes
    ----------
    folder : Path
    members : list of str
        The members' names (the run folders they were exported from).
    files : list of Path
        Their model files, in order.
    subjects : dict of str to list of str
        Every subject with its ROI groups.
    """

    folder: Path
    members: list[str]
    files: list[Path]
    subjects: dict[str, list[str]]


def read_manifest(folder: str | os.PathLike) -> ExportManifest:
    """The checked manifest of an exported folder.

    Raises
    ------
    CheckpointError
        Not an exported folder, another format version, or a damaged manifest.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    data = _read_json(folder, MANIFEST)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not the manifest of a folder brainencoder exported")
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: export format {str(data.get('format_version'))[:20]!r}, this brainencoder "
            f"reads {FORMAT_VERSION}; upgrade brainencoder"
        )
    members, subjects = data.get("members"), data.get("subjects")
    if not isinstance(members, list) or not 1 <= len(members) <= MAX_MEMBERS:
        raise _damaged(path, f"'members' must list 1 to {MAX_MEMBERS} models")
    names, files = [], []
    for i, member in enumerate(members):
        expected = member_file_name(i, len(members))
        if not isinstance(member, dict) or member.get("file") != expected:
            raise _damaged(path, f"member {i + 1} must be a mapping with file {expected!r}")
        names.append(_name(member.get("name"), path, "member name"))
        files.append(_safe_file(folder, expected, 1 << 62))
    if not isinstance(subjects, dict) or not subjects or len(subjects) > 10_000:
        raise _damaged(path, "'subjects' must map each subject to its ROI groups")
    groups: dict[str, list[str]] = {}
    for subject, entry in subjects.items():
        found = entry.get("roi_groups") if isinstance(entry, dict) else None
        if not isinstance(found, list) or len(found) > 64:
            raise _damaged(path, f"subject {str(subject)[:40]!r} needs a list of 'roi_groups'")
        groups[_name(subject, path, "subject")] = [_name(g, path, "ROI group") for g in found]
    return ExportManifest(folder, names, files, groups)


def member_files(folder: str | os.PathLike) -> list[Path]:
    """The model files of an exported folder, in order (checked as :func:`read_manifest`)."""
    return read_manifest(folder).files


def load_members(folder: str | os.PathLike) -> tuple[list[Any], list[str]]:
    """The models of an exported folder and their names (one, or an ensemble's members).

    Raises
    ------
    CheckpointError
        A damaged folder or model file (naming it), or a manifest whose
        subjects are not the model's.
    """
    from .kinds import MODEL_KINDS, kind_of_file

    manifest = read_manifest(folder)
    models = [MODEL_KINDS.get(kind_of_file(f)).load(f) for f in manifest.files]
    subjects = list(models[0].space.subjects)
    if sorted(manifest.subjects) != sorted(subjects):
        raise _damaged(
            manifest.folder / MANIFEST,
            f"it lists subjects {sorted(manifest.subjects)}, its model has {subjects}",
        )
    return models, manifest.members


class ExportedSubject:
    """One subject's vertices and ROI labels in an exported folder (a ``RoiFiles``).

    Parameters
    ----------
    folder : Path
        The exported folder.
    name : str
        The subject (a plain name, checked by :func:`read_manifest`).
    roi_groups : list of str
        Its ROI groups.

    Attributes
    ----------
    masks : dict of str to ndarray of bool, shape (n_fsaverage,)
        Per hemisphere, which fsaverage vertices the subject has.
    """

    def __init__(self, folder: Path, name: str, roi_groups: list[str]) -> None:
        self.folder, self.name, self.roi_groups = folder, name, list(roi_groups)
        self.masks = {}
        for hemi in HEMIS:
            path = self._file(f"{hemi}.all-vertices_fsaverage_space.npy")
            mask = _read_npy(path)
            if mask.ndim != 1 or mask.dtype.kind not in "biu" or not np.isin(mask, (0, 1)).all():
                raise _damaged(path, "a vertex mask must be a 1-D array of 0 and 1")
            self.masks[hemi] = mask.astype(bool)

    @property
    def roi_dir(self) -> Path:
        """The subject's folder of masks and labels (``rois/SUBJ``)."""
        return self.folder / ROIS / self.name

    def _file(self, name: str) -> Path:
        return _safe_file(self.folder, f"{ROIS}/{self.name}/{name}", _MAX_NPY)

    def n_vertices(self, hemi: str) -> int:
        """The subject's vertices in hemisphere ``hemi`` (its challenge-space columns)."""
        return int(self.masks[hemi].sum())

    def _group(self, group: str) -> str:
        if group not in self.roi_groups:
            raise DataError(
                f"{self.roi_dir}: {self.name} has no ROI group {group!r} "
                f"(it has {', '.join(self.roi_groups) or 'none'})"
            )
        return group

    def load_rois(self, group: str, hemi: str, space: str = "challenge") -> np.ndarray:
        """Integer ROI labels of the subject's columns in ``hemi``, shape (n_vertices,).

        Raises
        ------
        DataError
            For fsaverage-space labels (an export holds the subject's columns only).
        CheckpointError
            A damaged label file.
        """
        if space != "challenge":
            raise DataError(
                f"{self.roi_dir}: an exported folder holds ROI labels of the subject's own "
                "vertices only (challenge space); pass the challenge's data for fsaverage labels"
            )
        if hemi not in HEMIS:
            raise ValueError(f"'hemi' must be one of {{'lh', 'rh'}}; got {hemi!r}")
        path = self._file(f"{hemi}.{self._group(group)}_challenge_space.npy")
        labels = _read_npy(path)
        n = self.n_vertices(hemi)
        if labels.ndim != 1 or labels.dtype.kind not in "biu" or labels.shape[0] != n:
            raise _damaged(
                path, f"expected ({n},) integer labels, got {labels.dtype} {labels.shape}"
            )
        return labels.astype(np.int64)

    def load_mapping(self, group: str) -> dict[int, str]:
        """Label value -> ROI name of one group (a JSON object of the folder)."""
        relative = f"{ROIS}/{self.name}/mapping_{self._group(group)}.json"
        data = _read_json(self.folder, relative)
        path = self.folder / relative
        if not isinstance(data, dict) or len(data) > _MAX_ROI_NAMES:
            raise _damaged(path, "an ROI mapping must be a JSON object of label -> name")
        out = {}
        for key, value in data.items():
            if not _LABEL.match(key) or not isinstance(value, str) or not 0 < len(value) <= 200:
                raise _damaged(path, f"entry {key[:20]!r} is not an integer label with a name")
            out[int(key)] = value
        return out


@dataclass
class ExportedLayout:
    """The subjects of an exported folder, as ROI lookups read a challenge layout.

    Attributes
    ----------
    root : Path
        The exported folder.
    subjects : dict of str to ExportedSubject
    """

    root: Path
    subjects: dict[str, ExportedSubject]

    @property
    def names(self) -> list[str]:
        """The subjects read."""
        return list(self.subjects)

    def __getitem__(self, name: str) -> ExportedSubject:
        try:
            return self.subjects[name]
        except KeyError:
            raise DataError(
                f"unknown subject {name!r}; {self.root} has {', '.join(self.subjects)}"
            ) from None


def open_roi_layout(data: str | os.PathLike, subjects: list[str] | None = None) -> Any:
    """The ROI files of ``subjects`` in ``data``: an exported folder or a challenge-layout one.

    Parameters
    ----------
    data : path
        An exported folder, or a challenge-layout data root
        (:func:`~brainencoder.data.layout.read_layout`).
    subjects : list of str, optional
        Default: every subject.

    Returns
    -------
    ExportedLayout or DatasetLayout
        Both give ``layout[name]`` with ``masks``, ``roi_dir``, ``roi_groups``,
        ``load_rois`` and ``load_mapping``.
    """
    if not is_export(data):
        from ..data.layout import read_layout

        return read_layout(data, subjects)
    manifest = read_manifest(data)
    names = list(manifest.subjects) if subjects is None else list(subjects)
    unknown = [n for n in names if n not in manifest.subjects]
    if unknown:
        raise DataError(
            f"{data}: subjects {unknown} not found; available: {list(manifest.subjects)}"
        )
    folder = Path(data)
    return ExportedLayout(
        folder, {n: ExportedSubject(folder, n, manifest.subjects[n]) for n in names}
    )
