"""Challenge submissions: write, read, validate and score the zip.

A submission is a zip with ``subjXX/lh_pred_test.npy`` and
``subjXX/rh_pred_test.npy`` at its root for every subject: float32 arrays of
shape (n_test_images, n_vertices_hemi) in the subject's challenge space, rows
in sorted test-image order. It is validated before it is written, and written
atomically; reading one never unpickles and refuses members outside the root.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..data.layout import HEMIS, DatasetLayout
from ..util.errors import DataError, UnsafeFileError
from ..util.fileio import atomic_path

__all__ = [
    "check_test_images",
    "read_submission",
    "score_submission",
    "subject_test_scores",
    "write_submission",
]

_MEMBER = re.compile(r"^(subj\d+)/(lh|rh)_pred_test\.npy$")


def _expected_shapes(layout: DatasetLayout) -> dict[str, dict[str, tuple[int, int]]]:
    return {
        name: {h: (len(s.test_images), s.n_vertices(h)) for h in HEMIS}
        for name, s in layout.subjects.items()
    }


def _check_predictions(
    preds: Mapping[str, Mapping[str, np.ndarray]],
    expected: Mapping[str, Mapping[str, tuple[int, int]]],
) -> None:
    missing = sorted(set(expected) - set(preds))
    extra = sorted(set(preds) - set(expected))
    if missing or extra:
        raise DataError(
            f"submission subjects do not match the dataset: missing {missing}, unexpected {extra}"
        )
    for name, shapes in expected.items():
        for h in HEMIS:
            arr = preds[name].get(h)
            where = f"{name}/{h}_pred_test.npy"
            if arr is None:
                raise DataError(f"{where}: missing")
            if arr.dtype != np.float32:
                raise DataError(f"{where}: dtype {arr.dtype}, expected float32")
            if arr.shape != shapes[h]:
                raise DataError(
                    f"{where}: shape {arr.shape}, expected {shapes[h]} "
                    "(test images x challenge-space vertices)"
                )
            if not np.isfinite(arr).all():
                raise DataError(f"{where}: holds NaN or inf values")


def check_test_images(layout: DatasetLayout) -> None:
    """Raise if a subject has no test images (a submission needs every subject's)."""
    empty = [n for n, s in layout.subjects.items() if not s.test_images]
    if empty:
        raise DataError(
            f"subjects {empty} have no test images in {layout.root}; a submission "
            "needs them (restore test_split/test_images)"
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
    """Read and validate a submission zip (no pickles; no member may leave the root).

    Parameters
    ----------
    path : path
    layout : DatasetLayout, optional
        If given, shapes are checked against it.
    """
    preds: dict[str, dict[str, np.ndarray]] = {}
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable zip file ({exc})") from None
    with zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            match = _MEMBER.match(info.filename)
            if match is None:
                raise UnsafeFileError(
                    f"{path}: unexpected member {info.filename!r}; a "
                    "submission holds only subjXX/{lh,rh}_pred_test.npy"
                )
            with zf.open(info) as fh:
                try:
                    arr = np.load(io.BytesIO(fh.read()), allow_pickle=False)
                except ValueError as exc:
                    raise DataError(f"{path}:{info.filename}: not a numeric .npy ({exc})") from None
            preds.setdefault(match.group(1), {})[match.group(2)] = arr
    if layout is not None:
        _check_predictions(preds, _expected_shapes(layout))
    return preds


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
    from .evaluate import load_noise_ceiling

    truth_dir = Path(truth_dir)
    scores, kept = [], []
    for h in HEMIS:
        target_path = truth_dir / subject / f"{h}_test_fmri.npy"
        try:
            target = np.load(target_path, allow_pickle=False)
        except FileNotFoundError:
            raise DataError(f"{target_path}: truth file not found") from None
        except ValueError as exc:
            raise DataError(f"{target_path}: cannot read ({exc})") from None
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

    Returns
    -------
    dict
        Mean score per subject and ``"all"`` (the leaderboard's number),
        ``"median"``, and ``"all_nc_positive"``: the mean over vertices with
        NC > 0 only, a clearly different figure on data with NC = 0 vertices.
    """
    preds = read_submission(path, layout)
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
