"""Challenge submissions: write, read, validate and score the zip.

A submission is a zip with ``subjXX/lh_pred_test.npy`` and
``subjXX/rh_pred_test.npy`` at its root for every subject: float32 arrays of
shape (n_test_images, n_vertices_hemi) in the subject's challenge space, rows
in sorted test-image order. It is validated before it is written, and written
atomically.

A zip to read is untrusted input: members outside the root are refused, nothing
is unpickled, encrypted or damaged members (bad CRC, unknown compression) are
one-line errors, and each member is read as a stream whose header (dtype,
shape) is checked before its data, with a cap on the bytes read: what the
expected shape needs when the dataset or the truth is known, else
:data:`MAX_MEMBER_BYTES` (and :data:`MAX_SUBMISSION_BYTES` for the whole zip).
"""

from __future__ import annotations

import functools
import io
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..core.space import GroupSpace
from ..data.layout import HEMIS, DatasetLayout
from ..util.errors import DataError, UnsafeFileError
from ..util.fileio import atomic_path
from ..util.npystream import HEADER_BYTES, npy_file_shape, read_zip_member

__all__ = [
    "MAX_MEMBER_BYTES",
    "MAX_SUBMISSION_BYTES",
    "check_run_vertices",
    "check_test_images",
    "read_submission",
    "score_submission",
    "subject_test_scores",
    "truth_shapes",
    "write_submission",
]

_MEMBER = re.compile(r"(subj\d+)/(lh|rh)_pred_test\.npy")
_SUBJECT = re.compile(r"subj\d+")
MAX_MEMBER_BYTES = 1 << 30  # read from one member when no expected shape is known
MAX_SUBMISSION_BYTES = 4 << 30  # read from the whole zip when no expected shape is known

Shapes = Mapping[str, Mapping[str, tuple[int, ...]]]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _expected_shapes(layout: DatasetLayout) -> dict[str, dict[str, tuple[int, int]]]:
    return {
        name: {h: (len(s.test_images), s.n_vertices(h)) for h in HEMIS}
        for name, s in layout.subjects.items()
    }


def _check_predictions(
    preds: Mapping[str, Mapping[str, np.ndarray]],
    expected: Shapes | None,
    source: str | Path | None = None,
    against: str = "the dataset",
) -> None:
    """Raise unless ``preds`` are finite float32 arrays of every expected subject and hemisphere.

    Without ``expected`` (nothing to compare with), every subject present needs
    both hemispheres, 2-D arrays with as many rows in each.
    """
    prefix = f"{source}: " if source is not None else ""
    if expected is not None:
        missing = sorted(set(expected) - set(preds))
        extra = sorted(set(preds) - set(expected))
        if missing or extra:
            raise DataError(
                f"{prefix}submission subjects do not match {against}: missing {missing}, "
                f"unexpected {extra}"
            )
    if not preds:
        raise DataError(
            f"{prefix}no predictions; a submission holds subjXX/{{lh,rh}}_pred_test.npy "
            "for every subject"
        )
    for name in expected if expected is not None else sorted(preds):
        for h in HEMIS:
            arr = preds[name].get(h)
            where = f"{prefix}{name}/{h}_pred_test.npy"
            if arr is None:
                raise DataError(f"{where}: missing (every subject needs both hemispheres)")
            if arr.dtype != np.float32:
                raise DataError(f"{where}: dtype {arr.dtype}, expected float32")
            if expected is not None and arr.shape != tuple(expected[name][h]):
                raise DataError(
                    f"{where}: shape {arr.shape}, expected {tuple(expected[name][h])} "
                    "(test images x challenge-space vertices)"
                )
            if arr.ndim != 2:
                raise DataError(f"{where}: shape {arr.shape}, expected (test images, vertices)")
            if not np.isfinite(arr).all():
                raise DataError(f"{where}: holds NaN or inf values")
        rows = {h: preds[name][h].shape[0] for h in HEMIS}
        if rows["lh"] != rows["rh"]:
            raise DataError(
                f"{prefix}{name}: {rows['lh']} lh but {rows['rh']} rh prediction rows; "
                "both hold one row per test image"
            )


def check_test_images(layout: DatasetLayout) -> None:
    """Raise if a subject has no test images (a submission needs every subject's)."""
    empty = [n for n, s in layout.subjects.items() if not s.test_images]
    if empty:
        raise DataError(
            f"subjects {empty} have no test images in {layout.root}; a submission "
            "needs them (restore test_split/test_images)"
        )


def check_run_vertices(space: GroupSpace, layout: DatasetLayout, run: str | Path) -> None:
    """Raise unless the model of ``run`` has every subject of ``layout``, on its very vertices.

    Equal vertex counts are not enough: a model of other fsaverage vertices
    (another dataset's masks) would put its columns in the wrong places.

    Raises
    ------
    DataError
        Naming the run, the subject, the hemisphere and the vertices that differ.
    """
    for name, subj in layout.subjects.items():
        if name not in space.subjects:
            raise DataError(
                f"{run}: the run has no {name} of {layout.root} (it has "
                f"{', '.join(space.subjects)}); submit runs trained on every subject of the data"
            )
        for h in HEMIS:
            diff = space.vertex_difference(name, h, subj.masks[h], "the run", "the data")
            if diff is not None:
                mask = subj.roi_dir / f"{h}.all-vertices_fsaverage_space.npy"
                raise DataError(
                    f"{run}: {name} {h}: the run's vertices are not those of {mask}: {diff}; "
                    "pass --data the dataset the run was trained on, or train a run on this one"
                )


def write_submission(
    preds: Mapping[str, Mapping[str, np.ndarray]], layout: DatasetLayout, out: str | Path
) -> Path:
    """Validate predictions against the dataset and write the zip atomically.

    Parameters
    ----------
    preds : mapping of str to mapping of str to ndarray
        ``preds[subject][hemi]``, float32 (n_test, n_vertices_hemi).
    layout : DatasetLayout
        The challenge data (test image counts and vertex counts).
    out : path
    """
    check_test_images(layout)
    _check_predictions(preds, _expected_shapes(layout))
    out = Path(out)
    with atomic_path(out, suffix=".zip") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name in sorted(preds):
                for h in HEMIS:
                    buf = io.BytesIO()
                    np.save(buf, preds[name][h], allow_pickle=False)
                    zf.writestr(f"{name}/{h}_pred_test.npy", buf.getvalue())
    read_submission(out, layout)  # what was written reads back and validates
    return out


def read_submission(
    path: str | Path, layout: DatasetLayout | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """Read and validate a submission zip (untrusted input; see the module's notes).

    Parameters
    ----------
    path : path
    layout : DatasetLayout, optional
        If given, every subject of it must be there, with arrays of its shapes
        (and each member is read only up to the size of its shape). Without
        it, every subject present needs both hemispheres, and members are read
        up to :data:`MAX_MEMBER_BYTES`.

    Returns
    -------
    dict of str to dict of str to ndarray
        ``preds[subject][hemi]``, finite float32 (n_test, n_vertices_hemi).

    Raises
    ------
    DataError
        One line naming the zip and the member: unreadable zip, damaged,
        encrypted or oversized member, not a float32 .npy array (pickled
        objects are never loaded), wrong shape, NaN / inf, missing subject or
        hemisphere.
    UnsafeFileError
        A member that is not ``subjXX/{lh,rh}_pred_test.npy``.
    """
    if layout is None:
        return _read_zip(path, None, "the dataset")
    return _read_zip(path, _expected_shapes(layout), f"the dataset {layout.root}")


def _read_zip(
    path: str | Path, expected: Shapes | None, against: str
) -> dict[str, dict[str, np.ndarray]]:
    """The arrays of a submission zip, checked against ``expected`` (if known) while read."""
    preds: dict[str, dict[str, np.ndarray]] = {}
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable zip file ({_one_line(exc)})") from None
    total = 0
    with zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            match = _MEMBER.fullmatch(info.filename)
            if match is None:
                raise UnsafeFileError(
                    f"{path}: unexpected member {info.filename!r}; a "
                    "submission holds only subjXX/{lh,rh}_pred_test.npy"
                )
            subject, hemi = match.groups()
            where = f"{path}: {info.filename}"
            if expected is not None and subject not in expected:
                raise DataError(
                    f"{where}: subject {subject!r} is not in {against} "
                    f"(subjects: {', '.join(expected)})"
                )
            if hemi in preds.get(subject, {}):
                raise DataError(f"{where}: appears twice in the zip; keep one")
            if expected is None:
                shape, limit = None, min(MAX_MEMBER_BYTES, MAX_SUBMISSION_BYTES - total)
            else:
                shape = tuple(expected[subject][hemi])
                limit = HEADER_BYTES + 4 * int(np.prod(shape))
            why = (
                f"a .npy of a float32 array of shape {shape} takes at most {limit} bytes"
                if shape is not None
                else f"at most {limit} bytes are read from it"
            )
            check = functools.partial(_check_header, where, shape=shape)
            arr = np.ascontiguousarray(
                read_zip_member(zf, info, where, limit, why, check), np.float32
            )
            total += arr.nbytes
            preds.setdefault(subject, {})[hemi] = arr
    _check_predictions(preds, expected, path, against)
    return preds


def _check_header(where: str, found: tuple, dtype: np.dtype, _: int, shape: tuple | None) -> None:
    """Before any data is read: a float32 2-D array of the expected shape."""
    if dtype.hasobject:
        raise DataError(
            f"{where}: holds pickled Python objects (dtype {dtype}); they are never loaded. "
            "Save float32 arrays"
        )
    if dtype.kind != "f" or dtype.itemsize != 4:
        raise DataError(f"{where}: dtype {dtype}, expected float32")
    if shape is not None and found != shape:
        raise DataError(
            f"{where}: shape {found}, expected {shape} (test images x challenge-space vertices)"
        )
    if len(found) != 2:
        raise DataError(f"{where}: shape {found}, expected (test images, vertices)")


def truth_shapes(truth_dir: str | Path) -> dict[str, dict[str, tuple[int, ...]]]:
    """The subjects of a truth folder and the shape of each hemisphere's test responses.

    Parameters
    ----------
    truth_dir : path
        ``subjXX/{lh,rh}_test_fmri.npy`` (only the headers are read).

    Raises
    ------
    DataError
        No such folder, no subject in it, or a response file missing or unreadable.
    """
    truth_dir = Path(truth_dir)
    if not truth_dir.is_dir():
        raise DataError(
            f"{truth_dir}: truth folder not found; --truth is the folder of "
            "subjXX/{lh,rh}_test_fmri.npy and {lh,rh}_noise_ceiling.npy"
        )
    subjects = sorted(
        p.name
        for p in truth_dir.iterdir()
        if _SUBJECT.fullmatch(p.name)
        and p.is_dir()
        and any((p / f"{h}_test_fmri.npy").exists() for h in HEMIS)
    )
    if not subjects:
        raise DataError(
            f"{truth_dir}: no subjXX/{{lh,rh}}_test_fmri.npy; --truth is the folder of "
            "held-back test responses (as a synthetic dataset's truth/)"
        )
    shapes = {}
    for name in subjects:
        shapes[name] = {}
        for h in HEMIS:
            path = truth_dir / name / f"{h}_test_fmri.npy"
            shapes[name][h] = npy_file_shape(path, "held-back test responses")
            if len(shapes[name][h]) != 2:
                raise DataError(
                    f"{path}: shape {shapes[name][h]}, expected (test images, vertices)"
                )
    return shapes


def subject_test_scores(
    pred: Mapping[str, np.ndarray], truth_dir: str | Path, subject: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per-vertex challenge scores of one subject's test predictions.

    Parameters
    ----------
    pred : mapping of str to ndarray of shape (n_test, n_vertices_hemi)
        ``pred["lh"]``, ``pred["rh"]``.
    truth_dir : path
        ``subjXX/{lh,rh}_test_fmri.npy`` and ``{lh,rh}_noise_ceiling.npy``.
    subject : str

    Returns
    -------
    devkit, nc_positive : ndarray of shape (n_lh + n_rh,)
        The official devkit's per-vertex score, and the same with NaN where
        the noise ceiling is 0.
    """
    from ..core.metrics import noise_normalized_score, pearson_r
    from .evaluate import load_noise_ceiling, read_numeric_npy

    truth_dir = Path(truth_dir)
    scores, kept = [], []
    for h in HEMIS:
        target_path = truth_dir / subject / f"{h}_test_fmri.npy"
        target = read_numeric_npy(target_path, "held-back test responses")
        if target.shape != pred[h].shape:
            raise DataError(
                f"{target_path}: shape {target.shape}, but the predictions of "
                f"{subject}/{h} are {pred[h].shape}"
            )
        nc = load_noise_ceiling(truth_dir, subject, h, target.shape[1])
        r = pearson_r(pred[h], target)
        scores.append(noise_normalized_score(r, nc))
        kept.append(noise_normalized_score(r, nc, "nc_positive"))
    return np.concatenate(scores), np.concatenate(kept)


def score_submission(
    path: str | Path, truth_dir: str | Path, layout: DatasetLayout | None = None
) -> dict[str, float]:
    """Challenge score of any submission zip against held-back responses.

    ``truth_dir/subjXX/{lh,rh}_test_fmri.npy`` (n_test, n_vertices_hemi) and
    ``{lh,rh}_noise_ceiling.npy`` (fractions; percentages are converted with a
    warning) are required, as written by ``brainencoder synth``. The score is
    the official devkit's (:func:`~brainencoder.core.metrics.noise_normalized_score`,
    rule "devkit"): mean over every vertex of every subject.

    The zip must hold every subject of ``layout`` (the dataset), or without it
    every subject of ``truth_dir``, with finite float32 arrays of their shapes
    (see :func:`read_submission`).

    Returns
    -------
    dict
        Mean score per subject and ``"all"`` (the leaderboard's number),
        ``"median"``, and ``"all_nc_positive"``: the mean over vertices with
        NC > 0 only, a clearly different figure on data with NC = 0 vertices.
    """
    if layout is not None:
        preds = read_submission(path, layout)
    else:
        preds = _read_zip(path, truth_shapes(truth_dir), f"the truth in {truth_dir}")
    per_subject, every, positive = {}, [], []
    for name in sorted(preds):
        devkit, kept = subject_test_scores(preds[name], truth_dir, name)
        per_subject[name] = float(devkit.mean())
        every.append(devkit)
        positive.append(kept)
    allv, pos = np.concatenate(every), np.concatenate(positive)
    return {
        **per_subject,
        "all": float(allv.mean()),
        "median": float(np.median(allv)),
        "all_nc_positive": float(np.nanmean(pos)) if np.isfinite(pos).any() else float("nan"),
    }
