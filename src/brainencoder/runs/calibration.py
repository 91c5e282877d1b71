"""The calibration file of an ensemble: stored beside its runs, refused for other runs.

``brainencoder calibrate RUN...`` (:mod:`brainencoder.runs.calibrate`) writes
one small ``.npz`` per ensemble, by default in the first run's folder
(``calibration-<12 hex digits>.npz``, the digits naming the set of members),
holding per subject the scale ``a_v`` of every vertex and the order
statistics of the conformity scores (:mod:`brainencoder.inference.conformal`),
with a JSON header naming every member by its model file and the SHA-256 of
its content. Reading it for other runs, or after a member was retrained, is
refused with one line saying to calibrate again.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..inference.conformal import bounds, quantile_from_table
from ..util.errors import DataError
from ..util.npzfile import write_npz_atomic
from .locate import model_file

__all__ = [
    "FORMAT",
    "Calibration",
    "SubjectCalibration",
    "default_calibration_path",
    "member_identity",
    "read_calibration",
    "write_calibration",
]

FORMAT = "brainencoder-calibration-1"
_SUBJECT_KEYS = ("scale", "ranks", "values")


def member_identity(run: str | os.PathLike) -> dict[str, str]:
    """``{"model": absolute model file, "sha256": of its content}`` of a run or model file."""
    path = model_file(run).resolve()
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {"model": str(path), "sha256": digest.hexdigest()}


def default_calibration_path(runs: Sequence[str | os.PathLike]) -> Path:
    """Where the calibration of ``runs`` is by default: beside the first, named by the set.

    The first run folder (a model file: its folder) holds
    ``calibration-<digest>.npz``, the digest of the members' model files
    (order does not matter: the ensemble's mean does not depend on it).
    """
    files = sorted(str(model_file(r).resolve()) for r in runs)
    digest = hashlib.sha256("\n".join(files).encode()).hexdigest()[:12]
    first = Path(runs[0])
    folder = first if first.is_dir() else first.resolve().parent
    return folder / f"calibration-{digest}.npz"


@dataclass
class SubjectCalibration:
    """One subject's calibration.

    Attributes
    ----------
    scale : ndarray of float32, shape (n_lh + n_rh,)
        Every vertex's scale ``a_v`` (lh columns, then rh).
    ranks, values : ndarray, shape (k,)
        Order statistics of the pooled conformity scores
        (:func:`~brainencoder.inference.conformal.quantile_table`).
    n_scores : int
        How many scores they summarize (score rows x vertices).
    rows : dict of str to int
        Held-out rows used: ``{"scale": ..., "scores": ...}``.
    """

    scale: np.ndarray
    ranks: np.ndarray
    values: np.ndarray
    n_scores: int
    rows: dict[str, int] = field(default_factory=dict)


@dataclass
class Calibration:
    """An ensemble's calibration: its members, the rows it used and each subject's numbers.

    Attributes
    ----------
    members : list of dict
        :func:`member_identity` of each run.
    splits : list of str
        The store splits calibrated on (none of which any member trained on).
    subjects : dict of str to SubjectCalibration
    seed : int
        Of the cut of the held-out rows into scale rows and score rows.
    """

    members: list[dict[str, str]]
    splits: list[str]
    subjects: dict[str, SubjectCalibration]
    seed: int = 0

    def check_members(self, runs: Sequence[str | os.PathLike], path: str | os.PathLike) -> None:
        """Refuse unless ``runs`` are exactly the calibrated members, unchanged.

        Raises
        ------
        DataError
            Naming the calibration file, the member that differs and what to do.
        """
        ours = {m["sha256"]: m["model"] for m in self.members}
        given = [member_identity(r) for r in runs]
        again = f"calibrate again: brainencoder calibrate {' '.join(map(str, runs))}"
        for run, ident in zip(runs, given, strict=True):
            if ident["sha256"] not in ours:
                changed = ident["model"] in ours.values()
                why = "changed since it was calibrated" if changed else "is not one of its runs"
                raise DataError(f"{path}: {run} {why}; {again}")
        if len({g["sha256"] for g in given}) != len(ours):
            raise DataError(
                f"{path}: calibrated for {len(ours)} runs ({', '.join(ours.values())}), "
                f"not these {len(given)}; {again}"
            )

    def interval(
        self, subject: str, mean: np.ndarray, sd: np.ndarray, level: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Bounds of level ``level`` around ``mean`` for ``subject``.

        Parameters
        ----------
        subject : str
        mean, sd : ndarray, shape (n_images, n_lh + n_rh)
            The members' mean and spread, lh columns then rh.
        level : float
            In (0, 1), e.g. 0.9.

        Returns
        -------
        lower, upper : ndarray of float32, shape (n_images, n_lh + n_rh)
        """
        cal = self.subject(subject)
        if mean.shape[1] != cal.scale.size:
            raise DataError(
                f"the calibration of {subject} has {cal.scale.size} vertices, the prediction "
                f"{mean.shape[1]}; calibrate again"
            )
        q = quantile_from_table(cal.ranks, cal.values, cal.n_scores, level)
        return bounds(mean, sd, cal.scale, q)

    def subject(self, name: str) -> SubjectCalibration:
        """The calibration of subject ``name`` (DataError if it was not calibrated)."""
        if name not in self.subjects:
            raise DataError(
                f"{name} was not calibrated (calibrated: {', '.join(self.subjects) or 'none'}); "
                "calibrate on a store holding it"
            )
        return self.subjects[name]


def write_calibration(calibration: Calibration, path: str | os.PathLike) -> Path:
    """Write ``calibration`` to ``path`` (``.npz``, atomically); returns ``path``."""
    header = {
        "format": FORMAT,
        "members": calibration.members,
        "splits": calibration.splits,
        "seed": calibration.seed,
        "subjects": {
            name: {"n_scores": c.n_scores, "rows": c.rows}
            for name, c in calibration.subjects.items()
        },
    }
    arrays: dict[str, Any] = {"header": np.frombuffer(json.dumps(header).encode(), np.uint8)}
    for name, c in calibration.subjects.items():
        arrays.update({f"{name}/{key}": getattr(c, key) for key in _SUBJECT_KEYS})
    return write_npz_atomic(path, arrays)


def read_calibration(path: str | os.PathLike) -> Calibration:
    """Read a calibration file (never unpickles); DataError naming it if it is not one.

    Raises
    ------
    DataError
        The file is missing, damaged or not a calibration of this brainencoder.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: no calibration file; write it with brainencoder calibrate RUN... "
            "(in Python: be.calibrate)"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            header = json.loads(bytes(npz["header"]).decode())
            subjects = {
                name: SubjectCalibration(
                    *(np.asarray(npz[f"{name}/{key}"]) for key in _SUBJECT_KEYS),
                    n_scores=int(info["n_scores"]),
                    rows=dict(info.get("rows", {})),
                )
                for name, info in header["subjects"].items()
            }
        if header.get("format") != FORMAT:
            raise ValueError(f"format {header.get('format')!r}")
        members = [
            {"model": str(m["model"]), "sha256": str(m["sha256"])} for m in header["members"]
        ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"{path}: not a brainencoder calibration file ({exc}); write it again with "
            "brainencoder calibrate"
        ) from None
    return Calibration(members, list(header["splits"]), subjects, int(header.get("seed", 0)))
