"""Read "your own experiment": a simple layout of images, a trial table and responses.

The layout (``docs/own-data.md`` has the full description and an example)::

    ROOT/experiment.json            {"layout": "simple", "fsaverage_vertices": 163842}
    ROOT/subjXX/images/             image files (any format Pillow reads), or instead
    ROOT/subjXX/images.npy          uint8 (n_images, height, width, 3)  (or images.h5 / .hdf5)
    ROOT/subjXX/trials.csv          one line per trial: image,row[,split][,session][,image_id]
    ROOT/subjXX/responses/{lh,rh}.npy           float (n_rows, n_vertices_hemi), one row per trial
    ROOT/subjXX/responses/{lh,rh}.vertices.npy  int (n_vertices_hemi,) fsaverage index per column
    ROOT/subjXX/rois/{lh,rh}.<group>.npy        int (n_vertices_hemi,) label per column (optional)
    ROOT/subjXX/rois/<group>.json               {"0": "Unknown", "1": "V1v", ...}

``trials.csv`` columns: ``image`` (a file name in ``images/``, or a row of the
image array), ``row`` (the trial's row of the response arrays), ``split``
(``train`` or ``test``; default ``train``), ``session`` (the scan session,
for z-scoring in the noise ceiling; default one session), ``image_id`` (an
integer naming the picture across subjects, e.g. its NSD id; default: each
subject's images are its own). An image may have several trials.

This module reads the layout and lists its problems by file
(:class:`~brainencoder.data.problems.Problem`); the response, vertex and ROI
files are checked in :mod:`.simple_checks`; :mod:`.simple_convert` writes it
into the challenge layout for ``prepare``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.space import HEMIS, ico_vertices
from ..util.errors import DataError
from .layout import SUBJECT_PATTERN, find_subjects
from .problems import Problem
from .simple_checks import check_responses, check_rois, read_json_file
from .simple_trials import TRIAL_COLUMNS, Trials, read_trials
from .sources import ARRAY_SUFFIXES, ImageArray

__all__ = [
    "EXPERIMENT_FILE",
    "TRIAL_COLUMNS",
    "SimpleLayout",
    "SimpleSubject",
    "is_simple_layout",
    "read_simple",
    "read_simple_layout",
]

EXPERIMENT_FILE = "experiment.json"


@dataclass
class SimpleSubject:
    """One subject of the simple layout.

    Attributes
    ----------
    name : str
    root : Path
    image_source : Path
        The ``images/`` folder or the image array file.
    trials : Trials
        The parsed ``trials.csv``.
    image_id : ndarray of int64, shape (n_images,)
        Each image's id across subjects (given, or assigned by :func:`read_simple`).
    vertices : dict of str to ndarray of int64, shape (n_vertices_hemi,)
        fsaverage index of each response column, per hemisphere.
    n_rows : int
        Rows of the response arrays.
    roi_groups : list of str
        Groups with a mapping and label files of both hemispheres.
    """

    name: str
    root: Path
    image_source: Path
    trials: Trials
    image_id: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    vertices: dict[str, np.ndarray] = field(default_factory=dict)
    n_rows: int = 0
    roi_groups: list[str] = field(default_factory=list)

    @property
    def image_keys(self) -> list[str]:
        """Each image as ``trials.csv`` names it (a file name, or an array row as text)."""
        return self.trials.keys

    @property
    def image_test(self) -> np.ndarray:
        """Whether each image is a test image, shape (n_images,)."""
        return self.trials.test

    @property
    def trial_image(self) -> np.ndarray:
        """Index into :attr:`image_keys` of each trial, shape (n_trials,)."""
        return self.trials.image

    @property
    def trial_row(self) -> np.ndarray:
        """Row of the response arrays of each trial, shape (n_trials,)."""
        return self.trials.row

    @property
    def trials_path(self) -> Path:
        """``trials.csv``."""
        return self.root / "trials.csv"

    def response_path(self, hemi: str) -> Path:
        """``responses/{hemi}.npy``."""
        return self.root / "responses" / f"{hemi}.npy"

    def vertices_path(self, hemi: str) -> Path:
        """``responses/{hemi}.vertices.npy``."""
        return self.root / "responses" / f"{hemi}.vertices.npy"

    def roi_path(self, group: str, hemi: str) -> Path:
        """``rois/{hemi}.{group}.npy``."""
        return self.root / "rois" / f"{hemi}.{group}.npy"

    @property
    def is_array(self) -> bool:
        """Whether the images come from one array file (not a folder)."""
        return self.image_source.suffix.lower() in ARRAY_SUFFIXES

    def n_trials(self) -> np.ndarray:
        """Trials per image, shape (n_images,)."""
        return np.bincount(self.trial_image, minlength=len(self.image_keys))

    def order(self, test: bool) -> np.ndarray:
        """Indices of the train (or test) images, sorted by image id: the challenge row order."""
        chosen = np.flatnonzero(self.image_test == test)
        return chosen[np.argsort(self.image_id[chosen], kind="stable")]

    @property
    def train_images(self) -> list[str]:
        """The training images (as :attr:`image_keys` names them), in challenge row order."""
        return [self.image_keys[i] for i in self.order(False)]

    @property
    def test_images(self) -> list[str]:
        """The test images, in challenge row order."""
        return [self.image_keys[i] for i in self.order(True)]

    def n_vertices(self, hemi: str) -> int:
        """Response columns (vertices) of hemisphere ``hemi``."""
        return int(self.vertices[hemi].size)

    def roi_labels(self, group: str, hemi: str) -> np.ndarray:
        """ROI labels of the response columns (as given), shape (n_vertices_hemi,)."""
        return np.load(self.roi_path(group, hemi), allow_pickle=False).astype(np.int64)

    def image_file(self, index: int) -> Path:
        """The file of image ``index`` (folder sources only)."""
        return self.image_source / self.image_keys[index]

    def files(self) -> list[Path]:
        """Every source file the store is made from (for the fingerprint)."""
        images = (
            [self.image_source]
            if self.is_array
            else sorted({*map(self.image_file, range(len(self.image_keys)))})
        )
        groups = [self.root / "rois" / f"{g}.json" for g in self.roi_groups]
        groups += [self.roi_path(g, h) for g in self.roi_groups for h in HEMIS]
        hemis = [p for h in HEMIS for p in (self.response_path(h), self.vertices_path(h))]
        return [self.trials_path, *hemis, *groups, *images]


@dataclass
class SimpleLayout:
    """All subjects of a simple-layout root."""

    root: Path
    n_fsaverage: int
    subjects: dict[str, SimpleSubject]

    @property
    def names(self) -> list[str]:
        """Subject names, in the order read."""
        return list(self.subjects)

    @property
    def n_images(self) -> int:
        """Distinct images over all subjects (by image id)."""
        return len({int(i) for s in self.subjects.values() for i in s.image_id})

    def fingerprint(self) -> str:
        """Hash of names, sizes and modification times of every source file."""
        digest = hashlib.sha256()
        for path in [
            self.root / EXPERIMENT_FILE,
            *(p for s in self.subjects.values() for p in s.files()),
        ]:
            st = path.stat()
            digest.update(f"{path.relative_to(self.root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return digest.hexdigest()


def is_simple_layout(root: str | Path) -> bool:
    """Whether ``root`` holds a simple layout (an ``experiment.json``)."""
    return (Path(root) / EXPERIMENT_FILE).is_file()


def _read_experiment(root: Path, problems: list[Problem]) -> int | None:
    path = root / EXPERIMENT_FILE
    try:
        spec = read_json_file(path, "experiment file")
    except DataError as exc:
        problems.append(Problem(path, str(exc).split(": ", 1)[-1]))
        return None
    if not isinstance(spec, dict) or spec.get("layout") != "simple":
        problems.append(Problem(path, 'expected a JSON object with "layout": "simple"'))
        return None
    unknown = sorted(set(spec) - {"layout", "fsaverage_vertices", "description"})
    if unknown:
        problems.append(Problem(path, f"unknown keys {unknown} are ignored", blocking=False))
    n = spec.get("fsaverage_vertices", ico_vertices(7))
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        problems.append(
            Problem(path, f'"fsaverage_vertices" must be a positive integer (163842); got {n!r}')
        )
        return None
    return n


def _image_source(subj: Path, problems: list[Problem]) -> tuple[Path, int | set[str]] | None:
    """The image folder (and its file names) or the array file (and its length)."""
    found = [subj / "images"] if (subj / "images").is_dir() else []
    found += [
        subj / f"images{s}" for s in sorted(ARRAY_SUFFIXES) if (subj / f"images{s}").is_file()
    ]
    if len(found) != 1:
        what = (
            "no images/ folder or images.npy / images.h5"
            if not found
            else f"{len(found)} image sources ({', '.join(p.name for p in found)})"
        )
        problems.append(Problem(subj, f"{what}; keep exactly one"))
        return None
    source = found[0]
    if source.is_dir():
        return source, {
            p.name for p in source.iterdir() if p.is_file() and not p.name.startswith(".")
        }
    try:
        with ImageArray(source) as array:
            return source, len(array)
    except DataError as exc:
        problems.append(Problem(source, str(exc).split(": ", 1)[-1]))
        return None


def _read_subject(
    root: Path, name: str, n_fsaverage: int, problems: list[Problem], check_values: bool
) -> SimpleSubject | None:
    subj = root / name
    source = _image_source(subj, problems)
    if source is None:
        return None
    trials = read_trials(subj / "trials.csv", source[1], problems)
    if trials is None:
        return None
    out = SimpleSubject(name, subj, source[0], trials, trials.ids.copy())
    if not check_responses(out, n_fsaverage, problems, check_values):
        return None
    out.roi_groups = check_rois(out, problems)
    return out


def _assign_ids(subjects: Iterable[SimpleSubject]) -> None:
    """Give images without an ``image_id`` ids of their own, above every given id."""
    subjects = list(subjects)
    given = [int(s.image_id.max()) for s in subjects if s.trials.ids_given]
    next_id = max(given, default=-1) + 1
    for subj in subjects:
        if not subj.trials.ids_given:
            subj.image_id = np.arange(next_id, next_id + len(subj.image_keys), dtype=np.int64)
            next_id += len(subj.image_keys)


def read_simple(
    root: str | Path, names: list[str] | None, problems: list[Problem], check_values: bool = True
) -> SimpleLayout | None:
    """Read a simple layout, adding every problem found; subjects with blocking ones are left out.

    Parameters
    ----------
    root : path
        The folder holding ``experiment.json`` and the ``subjXX`` folders.
    names : list of str, optional
        Subjects to read; default all.
    problems : list of Problem
        Appended to.
    check_values : bool, default=True
        Scan the responses for NaN / inf (reads them whole).

    Returns
    -------
    SimpleLayout or None
        None when ``experiment.json`` or the subject folders are unusable.
    """
    root = Path(root)
    n_fsaverage = _read_experiment(root, problems)
    if not any(SUBJECT_PATTERN.match(p.name) and p.is_dir() for p in root.iterdir()):
        problems.append(
            Problem(
                root,
                "no subject folders (subj01, subj02, ...) beside experiment.json; put each "
                "subject's images, trials.csv and responses/ in one",
            )
        )
        return None
    try:
        found = find_subjects(root)
    except DataError as exc:
        problems.append(Problem(root, str(exc).split(": ", 1)[-1]))
        return None
    if names is not None:
        unknown = sorted(set(names) - set(found))
        if unknown:
            problems.append(Problem(root, f"subjects {unknown} not found; available: {found}"))
            return None
    if n_fsaverage is None:
        return None
    subjects = {}
    for name in names or found:
        subj = _read_subject(root, name, n_fsaverage, problems, check_values)
        if subj is not None:
            subjects[name] = subj
    _assign_ids(subjects.values())
    return SimpleLayout(root, n_fsaverage, subjects)


def read_simple_layout(
    root: str | Path, subjects: list[str] | None = None, check_values: bool = False
) -> SimpleLayout:
    """Read a simple layout, raising its first blocking problem as one line.

    Parameters
    ----------
    root : path
    subjects : list of str, optional
    check_values : bool, default=False
        Also scan the responses for NaN / inf (``prepare`` finds them as it averages).

    Returns
    -------
    SimpleLayout

    Raises
    ------
    DataError
        ``PATH: what is wrong; what to do`` (and how many more problems ``validate`` lists).
    """
    problems: list[Problem] = []
    layout = read_simple(root, subjects, problems, check_values)
    blocking = [p for p in problems if p.blocking]
    if blocking or layout is None:
        more = (
            f" (and {len(blocking) - 1} more; run 'brainencoder validate {root}')"
            if len(blocking) > 1
            else ""
        )
        raise DataError(str(blocking[0])[len("ERROR ") :] + more)
    return layout
