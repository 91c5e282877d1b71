"""Read a dataset in the Algonauts 2023 challenge layout (checks: :mod:`.validate`).

The layout (one folder per subject, ``subjXX``)::

    subjXX/roi_masks/{lh,rh}.all-vertices_fsaverage_space.npy
    subjXX/roi_masks/{lh,rh}.<group>_{challenge,fsaverage}_space.npy
    subjXX/roi_masks/mapping_<group>.npy
    subjXX/training_split/training_fmri/{lh,rh}_training_fmri.npy
    subjXX/training_split/training_images/train-0001_nsd-00013.png
    subjXX/test_split/test_images/test-0001_nsd-00845.png

Nothing about sizes is assumed: the number of subjects, images, fsaverage
vertices and challenge-space vertices are all read from the files.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.space import HEMIS
from ..util.errors import DataError
from ..util.fileio import load_mapping
from .problems import Problem

__all__ = [
    "HEMIS",
    "SUBJECT_PATTERN",
    "DatasetLayout",
    "Problem",
    "SubjectLayout",
    "find_subjects",
    "parse_image_name",
    "read_layout",
    "read_subjects",
]

SUBJECT_PATTERN = re.compile(r"^subj(\d+)$")
_IMAGE_RE = re.compile(r"^(train|test)-(\d+)_nsd-(\d+)\.png$")
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def parse_image_name(path: Path) -> tuple[str, int, int]:
    """Return ``(split, index, nsd_id)`` of a challenge image file name.

    Raises
    ------
    DataError
        If the name does not follow ``{train,test}-NNNN_nsd-NNNNN.png``.
    """
    match = _IMAGE_RE.match(path.name)
    if match is None:
        raise DataError(
            f"{path}: image name does not follow the challenge pattern "
            "'train-0001_nsd-00013.png' / 'test-0001_nsd-00845.png'"
        )
    return match.group(1), int(match.group(2)), int(match.group(3))


@dataclass
class SubjectLayout:
    """Paths and small arrays of one subject.

    Attributes
    ----------
    name : str
        Subject folder name, e.g. ``"subj01"``.
    root : Path
        The subject folder.
    train_images, test_images : list of Path
        Image files in sorted order (the order of the fMRI rows).
    nsd_train, nsd_test : ndarray of int64, shape (n_images,)
        0-based NSD image ids parsed from the file names.
    masks : dict of str to ndarray of bool, shape (n_fsaverage,)
        Per hemisphere, which fsaverage vertices the subject has.
    roi_groups : list of str
        ROI groups with challenge-space label files, e.g. ``"prf-visualrois"``.
    """

    name: str
    root: Path
    train_images: list[Path]
    test_images: list[Path]
    nsd_train: np.ndarray
    nsd_test: np.ndarray
    masks: dict[str, np.ndarray]
    roi_groups: list[str] = field(default_factory=list)

    @property
    def roi_dir(self) -> Path:
        return self.root / "roi_masks"

    def n_vertices(self, hemi: str) -> int:
        """Number of challenge-space vertices of hemisphere ``hemi``."""
        return int(self.masks[_check_hemi(hemi)].sum())

    def fmri_path(self, hemi: str) -> Path:
        """Path of the training fMRI file of hemisphere ``hemi``."""
        hemi = _check_hemi(hemi)
        return self.root / "training_split" / "training_fmri" / f"{hemi}_training_fmri.npy"

    def load_fmri(self, hemi: str, mmap: bool = True) -> np.ndarray:
        """Training fMRI of one hemisphere, shape (n_train, n_vertices_hemi).

        The shape is checked against the images and the vertex mask.
        """
        path = self.fmri_path(hemi)
        data = _open_npy(path, mmap)
        expected = (len(self.train_images), self.n_vertices(hemi))
        if data.ndim != 2 or data.shape != expected:
            raise DataError(
                f"{path}: shape {data.shape} does not match {expected[0]} training images x "
                f"{expected[1]} vertices of the {hemi}.all-vertices mask"
            )
        return data

    def roi_path(self, group: str, hemi: str, space: str = "challenge") -> Path:
        """Path of an ROI label file; ``space`` is ``"challenge"`` or ``"fsaverage"``."""
        if space not in ("challenge", "fsaverage"):
            raise ValueError(f"'space' must be one of {{'challenge', 'fsaverage'}}; got {space!r}")
        return self.roi_dir / f"{_check_hemi(hemi)}.{group}_{space}_space.npy"

    def load_rois(self, group: str, hemi: str, space: str = "challenge") -> np.ndarray:
        """Integer ROI labels of one group and hemisphere, shape (n_vertices,)."""
        path = self.roi_path(group, hemi, space)
        labels = _open_npy(path, mmap=False)
        n = self.n_vertices(hemi) if space == "challenge" else self.masks[hemi].shape[0]
        if labels.ndim != 1 or labels.shape[0] != n:
            raise DataError(f"{path}: shape {labels.shape}, expected ({n},) for {space} space")
        return np.asarray(labels).astype(np.int64)

    def load_mapping(self, group: str) -> dict[int, str]:
        """ROI names of a group, read safely (see :func:`brainencoder.util.fileio.load_mapping`)."""
        return load_mapping(self.roi_dir / f"mapping_{group}.npy")


@dataclass
class DatasetLayout:
    """All subjects of a dataset root."""

    root: Path
    subjects: dict[str, SubjectLayout]

    @property
    def names(self) -> list[str]:
        return list(self.subjects)

    def __getitem__(self, name: str) -> SubjectLayout:
        try:
            return self.subjects[name]
        except KeyError:
            raise DataError(
                f"unknown subject {name!r}; this dataset has {', '.join(self.subjects)}"
            ) from None


def _check_hemi(hemi: str) -> str:
    if hemi not in HEMIS:
        raise ValueError(f"'hemi' must be one of {{'lh', 'rh'}}; got {hemi!r}")
    return hemi


def _open_npy(path: Path, mmap: bool) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as exc:
        raise DataError(
            f"{path}: cannot read this .npy file ({exc}); it may be truncated or not a "
            "numeric array; copy it again from the source"
        ) from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None


def find_subjects(root: str | Path) -> list[str]:
    """Names of the subject folders (``subjXX``) under ``root``, sorted.

    Raises
    ------
    DataError
        If ``root`` does not exist, holds no subject folder, or holds two
        folders for the same subject number (``subj1`` and ``subj01``).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and SUBJECT_PATTERN.match(p.name))
    if not names:
        raise DataError(
            f"{root}: no subject folders (subj01, subj02, ...) found; point to the folder "
            "that holds the subjXX folders of the challenge download"
        )
    numbers: dict[int, str] = {}
    for name in names:
        number = int(SUBJECT_PATTERN.match(name).group(1))
        if number in numbers:
            raise DataError(
                f"{root}: folders {numbers[number]!r} and {name!r} are the same subject; "
                "keep one of them"
            )
        numbers[number] = name
    return names


def _list_images(folder: Path, split: str, problems: list[Problem]) -> list[Path]:
    """Image files of a split, ordered by the index parsed from their names.

    Row ``i`` of the fMRI belongs to ``{split}-{i + 1}_nsd-...``, whatever the
    zero padding; duplicate or missing indices, names that do not parse and
    anything that is not a regular file are problems naming the file.
    """
    if not folder.is_dir():
        problems.append(Problem(folder, "image folder not found", blocking=split == "train"))
        return []
    indexed: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if not path.is_file():  # FIFOs, devices, folders, dangling or looping symlinks
            problems.append(
                Problem(
                    path,
                    "not a regular file (a folder, pipe, device or broken link); "
                    "move it out of the image folder",
                )
            )
            continue
        match = _IMAGE_RE.match(path.name)
        if match is None or match.group(1) != split:
            hint = (
                "not an image file"
                if path.suffix.lower() not in _IMAGE_SUFFIXES
                else (f"name does not follow '{split}-0001_nsd-00013.png'")
            )
            problems.append(Problem(path, f"{hint}; move it out of the image folder"))
            continue
        index = int(match.group(2))
        if index in indexed:
            problems.append(
                Problem(
                    path,
                    f"duplicate image index {index} (also {indexed[index].name}); "
                    "each index must appear once",
                )
            )
            continue
        indexed[index] = path
    order = sorted(indexed)
    missing = sorted(set(range(1, len(order) + 1)) - set(order))
    if missing:
        extra = [indexed[i] for i in order if i > len(order)]
        problems.append(
            Problem(
                extra[0] if extra else folder,
                f"image indices must run 1..{len(order)} (row i of the fMRI is image i); "
                f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}",
            )
        )
    return [indexed[i] for i in order]


def _read_subject(root: Path, name: str, problems: list[Problem]) -> SubjectLayout | None:
    subj_root = root / name
    masks = {}
    for hemi in HEMIS:
        path = subj_root / "roi_masks" / f"{hemi}.all-vertices_fsaverage_space.npy"
        try:
            mask = _open_npy(path, mmap=False)
        except DataError as exc:
            problems.append(Problem(path, str(exc).split(": ", 1)[1]))
            continue
        if mask.ndim != 1 or not np.isin(np.unique(mask), (0, 1)).all():
            problems.append(
                Problem(
                    path,
                    f"expected a 1-D 0/1 mask, got shape {mask.shape} "
                    f"with values {np.unique(mask)[:5].tolist()}",
                )
            )
            continue
        masks[hemi] = mask.astype(bool)
    train = _list_images(subj_root / "training_split" / "training_images", "train", problems)
    test = _list_images(subj_root / "test_split" / "test_images", "test", problems)
    if not test and (subj_root / "test_split" / "test_images").is_dir():
        problems.append(
            Problem(
                subj_root / "test_split" / "test_images",
                "no test images; 'submit' needs them",
                blocking=False,
            )
        )
    if len(masks) < len(HEMIS):
        return None
    groups = sorted(
        {
            p.name.split(".", 1)[1].rsplit("_challenge_space", 1)[0]
            for p in (subj_root / "roi_masks").glob("*h.*_challenge_space.npy")
        }
    )
    return SubjectLayout(
        name=name,
        root=subj_root,
        train_images=train,
        test_images=test,
        nsd_train=np.array([parse_image_name(p)[2] for p in train], dtype=np.int64),
        nsd_test=np.array([parse_image_name(p)[2] for p in test], dtype=np.int64),
        masks=masks,
        roi_groups=groups,
    )


def read_subjects(root: Path, names: list[str], problems: list[Problem]) -> DatasetLayout:
    """Read the named subjects, adding problems; subjects without masks are left out."""
    layout = DatasetLayout(root, {})
    for name in names:
        subj = _read_subject(root, name, problems)
        if subj is not None:
            layout.subjects[name] = subj
    _check_mask_lengths(layout, problems)
    return layout


def read_layout(root: str | Path, subjects: Iterable[str] | None = None) -> DatasetLayout:
    """Read the layout of a dataset, raising on the first blocking problem.

    This reads file names, masks and array headers only (no image decoding,
    no fMRI scan); use :func:`validate_dataset` for a full check.

    Parameters
    ----------
    root : path
        Folder holding the ``subjXX`` folders.
    subjects : iterable of str, optional
        Subset of subjects to read; default all.

    Returns
    -------
    layout : DatasetLayout
    """
    root = Path(root)
    names = find_subjects(root)
    if subjects is not None:
        wanted = list(subjects)
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise DataError(f"{root}: subjects {unknown} not found; available: {names}")
        names = wanted
    problems: list[Problem] = []
    layout = read_subjects(root, names, problems)
    for subj in layout.subjects.values():
        for hemi in HEMIS:
            try:
                subj.load_fmri(hemi)
            except DataError as exc:
                problems.append(Problem(subj.fmri_path(hemi), str(exc).split(": ", 1)[1]))
    blocking = [p for p in problems if p.blocking]
    if blocking:
        more = f" (and {len(blocking) - 1} more; run 'brainencoder validate {root}')"
        raise DataError(str(blocking[0])[len("ERROR ") :] + (more if len(blocking) > 1 else ""))
    return layout


def _check_mask_lengths(layout: DatasetLayout, problems: list[Problem]) -> None:
    lengths = {
        (name, hemi): subj.masks[hemi].shape[0]
        for name, subj in layout.subjects.items()
        for hemi in HEMIS
    }
    if len(set(lengths.values())) > 1:
        (first, n0), *_ = lengths.items()
        for (name, hemi), n in lengths.items():
            if n != n0:
                problems.append(
                    Problem(
                        layout.subjects[name].roi_dir / f"{hemi}.all-vertices_fsaverage_space.npy",
                        f"mask has {n} fsaverage vertices but {first[0]} {first[1]} has {n0}",
                    )
                )
