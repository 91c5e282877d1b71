"""Checks of a simple-layout subject's response, vertex and ROI files (see :mod:`.simple_layout`).

Each check appends :class:`~brainencoder.data.problems.Problem` entries naming
the file and what to do; nothing raises on bad input.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..core.space import HEMIS
from ..util.errors import DataError
from .problems import Problem

if TYPE_CHECKING:
    from .simple_layout import SimpleSubject

__all__ = [
    "GROUP_PATTERN",
    "check_responses",
    "check_rois",
    "nonfinite_rows",
    "open_array",
    "read_json_file",
    "read_roi_mapping",
]

GROUP_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_CHUNK_ROWS = 1024


def open_array(path: Path, what: str, mmap: bool = True) -> np.ndarray:
    """A numeric ``.npy`` array (memory-mapped, never unpickled).

    Raises
    ------
    DataError
        ``PATH: ...`` when missing, unreadable, pickled or not numbers.
    """
    try:
        data = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except (ValueError, OSError, EOFError) as exc:
        reason = " ".join(str(exc).split())
        raise DataError(
            f"{path}: cannot read this .npy file ({reason}); write it with numpy.save "
            "(numbers only, never pickled objects)"
        ) from None
    if not isinstance(data, np.ndarray) or data.dtype.kind not in "fiu":
        kind = getattr(data, "dtype", type(data).__name__)
        raise DataError(f"{path}: holds {kind} values, not numbers; write {what} as numbers")
    return data


def nonfinite_rows(data: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Which of ``rows`` of ``data`` hold NaN or inf, read in chunks.

    Parameters
    ----------
    data : ndarray of shape (n_rows, n_columns)
        Memory-mapped responses.
    rows : ndarray of int64, shape (n,)

    Returns
    -------
    ndarray of int64
        The bad rows, sorted.
    """
    bad = []
    for start in range(0, data.shape[0], _CHUNK_ROWS):
        chunk = np.asarray(data[start : start + _CHUNK_ROWS])
        bad.append(start + np.flatnonzero(~np.isfinite(chunk).all(axis=1)))
    found = np.concatenate(bad) if bad else np.zeros(0, dtype=np.int64)
    return np.intersect1d(found, rows)


def _check_vertices(path: Path, n_columns: int, n_fsaverage: int) -> np.ndarray | str:
    """The vertex indices of ``path``, or what is wrong with them."""
    try:
        vertices = np.asarray(open_array(path, "vertex indices", mmap=False))
    except DataError as exc:
        return str(exc).split(": ", 1)[-1]
    if vertices.ndim != 1 or vertices.dtype.kind not in "iu":
        return f"expected 1-D integer fsaverage indices; got {vertices.dtype} {vertices.shape}"
    if vertices.size != n_columns:
        return (
            f"{vertices.size} vertex indices for {n_columns} response columns; give one per column"
        )
    if vertices.size and (vertices.min() < 0 or vertices.max() >= n_fsaverage):
        return (
            f"indices must lie in 0..{n_fsaverage - 1} (experiment.json's fsaverage_vertices); "
            f"found {int(vertices.min())}..{int(vertices.max())}"
        )
    values, counts = np.unique(vertices, return_counts=True)
    if (counts > 1).any():
        dup = values[counts > 1]
        columns = np.flatnonzero(vertices == dup[0])[:2].tolist()
        return (
            f"duplicate vertex indices: {dup[:5].tolist()} ({dup.size} in all; vertex "
            f"{int(dup[0])} is columns {columns[0]} and {columns[1]}); each column must be "
            "a different fsaverage vertex"
        )
    return vertices.astype(np.int64)


def check_responses(
    subj: SimpleSubject, n_fsaverage: int, problems: list[Problem], check_values: bool
) -> bool:
    """Check ``responses/{lh,rh}.npy`` and their vertex files; set ``subj.vertices``, ``n_rows``.

    Parameters
    ----------
    subj : SimpleSubject
    n_fsaverage : int
        Vertices per fsaverage hemisphere.
    problems : list of Problem
        Appended to.
    check_values : bool
        Scan the rows that trials use for NaN / inf.

    Returns
    -------
    bool
        False when the subject cannot be used (a blocking problem here).
    """
    ok, shapes = True, {}
    for hemi in HEMIS:
        path = subj.response_path(hemi)
        try:
            data = open_array(path, "responses")
        except DataError as exc:
            problems.append(Problem(path, str(exc).split(": ", 1)[-1]))
            ok = False
            continue
        if data.ndim != 2 or 0 in data.shape:
            problems.append(
                Problem(path, f"expected (trials, vertices) responses; got shape {data.shape}")
            )
            ok = False
            continue
        shapes[hemi] = data.shape
        found = _check_vertices(subj.vertices_path(hemi), data.shape[1], n_fsaverage)
        if isinstance(found, str):
            problems.append(Problem(subj.vertices_path(hemi), found))
            ok = False
        else:
            subj.vertices[hemi] = found
        if check_values:
            bad = nonfinite_rows(data, subj.trial_row)
            if bad.size:
                problems.append(
                    Problem(
                        path,
                        f"{bad.size} trial rows hold NaN or inf values (first: row {int(bad[0])}); "
                        "fix the file or prepare with --nan-policy zero",
                    )
                )
    if len(shapes) == len(HEMIS) and shapes["lh"][0] != shapes["rh"][0]:
        problems.append(
            Problem(
                subj.response_path("rh"),
                f"{shapes['rh'][0]} rows but lh.npy has {shapes['lh'][0]}; "
                "row i of both is the same trial",
            )
        )
        return False
    if not ok:
        return False
    subj.n_rows = shapes["lh"][0]
    beyond = subj.trial_row >= subj.n_rows
    if beyond.any():
        problems.append(
            Problem(
                subj.trials_path,
                f"rows {np.unique(subj.trial_row[beyond])[:5].tolist()} are beyond the "
                f"{subj.n_rows} rows of responses/lh.npy; 'row' counts the responses' rows from 0",
            )
        )
        return False
    return True


def read_json_file(path: Path, what: str) -> object:
    """The JSON value of ``path``.

    Raises
    ------
    DataError
        ``PATH: {what} not found`` or ``PATH: not valid JSON (...)``.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); fix the {what}") from None


def read_roi_mapping(path: Path) -> dict[int, str]:
    """An ROI mapping file ``{"0": "Unknown", "1": "V1v"}`` (JSON, never a pickle) as a dict.

    Returns
    -------
    dict of int to str
        Label value to ROI name.

    Raises
    ------
    DataError
        Naming the file.
    """
    spec = read_json_file(path, "ROI mapping")
    if not isinstance(spec, dict):
        raise DataError(f'{path}: expected a JSON object of label -> name, e.g. {{"1": "V1v"}}')
    mapping = {}
    for key, value in spec.items():
        if not key.strip().isdigit() or not isinstance(value, str):
            raise DataError(
                f"{path}: expected labels (integers >= 0, as text) mapped to names; "
                f"found {key!r}: {value!r}"
            )
        mapping[int(key)] = value
    return mapping


def _check_labels(path: Path, n: int, mapping: dict[int, str]) -> str | None:
    try:
        labels = np.asarray(open_array(path, "ROI labels", mmap=False))
    except DataError as exc:
        return str(exc).split(": ", 1)[-1]
    if labels.ndim != 1 or labels.size != n or labels.dtype.kind not in "iu":
        return (
            f"expected {n} integer labels (one per response column); "
            f"got {labels.dtype} {labels.shape}"
        )
    unknown = sorted(set(np.unique(labels).tolist()) - set(mapping) - {0})
    if unknown:
        return f"labels {unknown[:5]} are not in {path.name.split('.', 1)[1][:-4]}.json"
    return None


def check_rois(subj: SimpleSubject, problems: list[Problem]) -> list[str]:
    """Check ``rois/``: each group's JSON mapping and label files of both hemispheres.

    Returns
    -------
    list of str
        The usable groups, sorted.
    """
    folder = subj.root / "rois"
    if not folder.is_dir() or not all(h in subj.vertices for h in HEMIS):
        return []
    groups = {p.stem for p in folder.glob("*.json")}
    groups |= {p.name.split(".", 1)[1][:-4] for p in folder.glob("?h.*.npy") if p.name[:2] in HEMIS}
    usable = []
    for group in sorted(groups):
        if not GROUP_PATTERN.match(group):
            problems.append(
                Problem(
                    folder / f"{group}.json", "ROI group names are letters, digits, '-' and '_'"
                )
            )
            continue
        try:
            mapping = read_roi_mapping(folder / f"{group}.json")
        except DataError as exc:
            problems.append(Problem(folder / f"{group}.json", str(exc).split(": ", 1)[-1]))
            continue
        found = []
        for hemi in HEMIS:
            path = subj.roi_path(group, hemi)
            if not path.is_file():
                found.append(
                    Problem(
                        path,
                        "not found; each ROI group needs both hemispheres (label 0 where no ROI)",
                    )
                )
                continue
            message = _check_labels(path, subj.n_vertices(hemi), mapping)
            if message:
                found.append(Problem(path, message))
        problems += found
        if not found:
            usable.append(group)
    return usable
