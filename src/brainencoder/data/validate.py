"""``brainencoder validate``: every problem of a dataset (either layout), collected.

Reading the layout (:func:`~brainencoder.data.layout.read_layout`) already
refuses what would stop training; validation goes on past each problem and
also checks the fMRI values, the ROI files and (optionally) that every image
decodes, so one run lists everything to fix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..util.errors import DataError
from .layout import (
    HEMIS,
    SUBJECT_PATTERN,
    SubjectLayout,
    find_subjects,
    read_subjects,
)
from .problems import Problem, ValidationReport, check_image
from .simple_layout import is_simple_layout

__all__ = ["ValidationReport", "check_image", "validate_dataset"]

_FMRI_CHUNK_ROWS = 1024


def _check_fmri_values(path: Path, data: np.ndarray) -> Problem | None:
    if data.dtype.kind not in "fiu":
        return Problem(
            path, f"holds {data.dtype} values, not numbers; write the responses as float32"
        )
    bad_rows = 0
    first = None
    for start in range(0, data.shape[0], _FMRI_CHUNK_ROWS):
        chunk = np.asarray(data[start : start + _FMRI_CHUNK_ROWS])
        finite = np.isfinite(chunk)
        if not finite.all():
            rows = np.flatnonzero(~finite.all(axis=1))
            bad_rows += rows.size
            first = first if first is not None else start + int(rows[0])
    if bad_rows:
        return Problem(
            path,
            f"{bad_rows} rows hold NaN or inf values (first: row {first}); "
            "fix the file or prepare with --nan-policy zero",
        )
    return None


def _check_rois(subj: SubjectLayout, problems: list[Problem]) -> dict[str, list[str]]:
    present: dict[str, list[str]] = {}
    for group in subj.roi_groups:
        try:
            mapping = subj.load_mapping(group)
        except DataError as exc:
            problems.append(
                Problem(subj.roi_dir / f"mapping_{group}.npy", str(exc).split(": ", 1)[1])
            )
            continue
        names: list[str] = []
        for hemi in HEMIS:
            for space in ("challenge", "fsaverage"):
                path = subj.roi_path(group, hemi, space)
                if not path.exists():
                    problems.append(Problem(path, "ROI label file not found", blocking=False))
                    continue
                try:
                    labels = subj.load_rois(group, hemi, space)
                except DataError as exc:
                    problems.append(Problem(path, str(exc).split(": ", 1)[1]))
                    continue
                unknown = sorted(set(np.unique(labels).tolist()) - set(mapping))
                if unknown:
                    problems.append(
                        Problem(path, f"labels {unknown} are not in mapping_{group}.npy")
                    )
                if space == "challenge":
                    names += [mapping[v] for v in np.unique(labels).tolist() if v in mapping and v]
        present[group] = sorted(set(names), key=names.index)
    return present


def validate_dataset(
    root: str | Path,
    check_images: bool = True,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> ValidationReport:
    """Check a dataset against itself and collect every problem.

    A folder with an ``experiment.json`` is your own experiment's simple
    layout, checked by :func:`~brainencoder.data.simple_validate.validate_simple`.
    Otherwise (the challenge layout) this checks subject folders, vertex
    masks, ROI label files and mapping files (read safely), training fMRI
    shape (rows = training images, columns = mask vertices) and values
    (NaN/inf), image names, and (unless ``check_images=False``) that every
    image decodes.

    Parameters
    ----------
    root : path
        Folder holding the ``subjXX`` folders (and ``experiment.json`` in the simple layout).
    check_images : bool, default=True
        Decode-check every image (the slowest check).
    progress : callable, optional
        Wraps an iterable to show progress (e.g. ``tqdm``).

    Returns
    -------
    report : ValidationReport
        ``report.ok`` is False when a problem blocks training.
    """
    root = Path(root)
    if is_simple_layout(root):
        from .simple_validate import validate_simple

        return validate_simple(root, check_images, progress)
    problems: list[Problem] = []
    try:
        names = find_subjects(root)
    except DataError as exc:
        path, _, message = str(exc).partition(": ")
        return ValidationReport(root, None, [Problem(Path(path), message)])
    numbers = sorted(int(SUBJECT_PATTERN.match(n).group(1)) for n in names)
    gaps = sorted(set(range(1, numbers[-1] + 1)) - set(numbers))
    if gaps:
        problems.append(
            Problem(root, f"subjects {gaps} are missing (found {names})", blocking=False)
        )
    layout = read_subjects(root, names, problems)
    rois = {}
    for subj in layout.subjects.values():
        for hemi in HEMIS:
            path = subj.fmri_path(hemi)
            try:
                data = subj.load_fmri(hemi)
            except DataError as exc:
                problems.append(Problem(path, str(exc).split(": ", 1)[1]))
                continue
            found = _check_fmri_values(path, data)
            if found:
                problems.append(found)
        rois[subj.name] = _check_rois(subj, problems)
    if check_images:
        paths = [p for s in layout.subjects.values() for p in s.train_images + s.test_images]
        with ThreadPoolExecutor() as pool:
            results = pool.map(check_image, paths, chunksize=64)
            if progress is not None:
                results = progress(results, total=len(paths))
            problems += [r for r in results if r is not None]
    return ValidationReport(root, layout, problems, rois)
