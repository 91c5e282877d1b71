"""Calibrating an ensemble on held-out rows: what ``brainencoder calibrate`` computes.

Split conformal (:mod:`brainencoder.inference.conformal`) on the store rows
that no member trained on (:func:`~brainencoder.runs.provenance.check_held_out`
on every member): by default every split of ``val`` and ``testval`` that all
members hold out. Each subject's held-out rows are cut in two (seeded): the
first part gives the vertices' scales, the second the conformity scores. The
result is written beside the runs (:mod:`brainencoder.runs.calibration`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.space import HEMIS
from ..data.store import Store
from ..inference.conformal import member_spread, normalized_scores, quantile_table, vertex_scale
from ..inference.store import predict_store_rows
from ..util.errors import BrainEncoderError, DataError
from ..util.ownership import check_output_file
from .calibration import (
    Calibration,
    SubjectCalibration,
    default_calibration_path,
    member_identity,
    write_calibration,
)
from .hub import resolve_source
from .load import load_model
from .provenance import HELD_OUT, check_held_out
from .run import Run

__all__ = ["MIN_ROWS", "calibrate_runs", "held_out_splits", "member_predictions"]

MIN_ROWS = 4  # held-out rows a subject needs: two for the scales, two for the scores


def held_out_splits(
    runs: Sequence[Path],
    pairs: Sequence[tuple[str, Store]],
    splits: Sequence[str] | None,
    trust_splits: bool = False,
) -> list[str]:
    """The splits every member holds out for every subject of ``pairs``.

    Asked splits (``splits``) must all be held out (else the one-line refusal of
    :func:`~brainencoder.runs.provenance.check_held_out`); by default, those of
    ``val`` and ``testval`` that are, and a one-line refusal where none is.

    Raises
    ------
    DataError
    """
    asked = list(splits) if splits else list(HELD_OUT)
    for split in asked:
        if split not in HELD_OUT:
            raise DataError(
                f"calibrate on {' or '.join(HELD_OUT)} rows (held out by the runs); got {split!r}"
            )
    kept, reasons = [], []
    for split in asked:
        try:
            for run in runs:
                check_held_out(run, split, pairs, trust_splits)
        except DataError as exc:
            if splits:
                raise
            reasons.append(str(exc).split(", so ")[0])
            continue
        kept.append(split)
    if not kept:
        raise DataError(
            f"no held-out rows to calibrate on: {'; '.join(reasons)}; calibrate an ensemble "
            "of runs trained on train only (train_on: [train]; [train, val] leaves testval)"
        )
    return kept


def member_predictions(
    models: Sequence, store: Store, subject: str, rows: np.ndarray, batch_size: int = 64
) -> list[np.ndarray]:
    """Every member's predictions of ``subject`` at store rows ``rows``.

    Returns
    -------
    list of ndarray of float32, shape (len(rows), n_lh + n_rh)
    """
    out = []
    for model in models:
        pred = np.empty((rows.size, sum(store.subject(subject).n_vertices.values())), np.float32)
        for pos, block in predict_store_rows(model, store, subject, rows, batch_size):
            pred[pos] = block
        out.append(pred)
    return out


def _subject(models, store: Store, name: str, rows: np.ndarray, seed: int) -> SubjectCalibration:
    """One subject's scales and scores from its held-out ``rows``."""
    if rows.size < MIN_ROWS:
        raise DataError(
            f"{store.path}: {name} has {rows.size} held-out rows; calibration needs at least "
            f"{MIN_ROWS} (prepare the store with larger val / testval fractions)"
        )
    mean, sd = member_spread(member_predictions(models, store, name, rows))
    y = store.read_fmri(name, rows)
    order = np.random.default_rng([seed, rows.size]).permutation(rows.size)
    first, second = order[: rows.size // 2], order[rows.size // 2 :]
    scale = vertex_scale(y[first], mean[first])
    scores = normalized_scores(y[second], mean[second], sd[second], scale)
    ranks, values = quantile_table(scores)
    return SubjectCalibration(
        scale, ranks, values, int(scores.size), {"scale": first.size, "scores": second.size}
    )


def _pairs(first: Path, subjects: list[str], store: Store | None) -> list[tuple[str, Store]]:
    """The subjects to calibrate, each with its store (the first run's records, or ``store``)."""
    if first.is_dir():
        pairs = Run(first).subject_stores(subjects, store)
    elif store is None:
        raise DataError(f"{first}: a model file records no store; pass --store STORE")
    else:
        pairs = [(n, store) for n in subjects if n in store.names]
    if not pairs:
        raise DataError(f"none of the model's subjects ({', '.join(subjects)}) is in the store")
    return pairs


def calibrate_runs(
    runs: Sequence[str | os.PathLike],
    store: str | os.PathLike | None = None,
    splits: Sequence[str] | None = None,
    out: str | os.PathLike | None = None,
    seed: int = 0,
    trust_splits: bool = False,
) -> Path:
    """Calibrate the ensemble of ``runs`` and write its calibration file.

    Parameters
    ----------
    runs : sequence of path
        Run folders or model files of one vertex space (one run: its spread is zero).
    store : path, optional
        Default: the first run's store (each subject's own, for adapted subjects).
    splits : sequence of {"val", "testval"}, optional
        Default: every one of them all members hold out.
    out : path, optional
        The ``.npz`` to write; default: beside the first run
        (:func:`~brainencoder.runs.calibration.default_calibration_path`).
    seed : int, default=0
        Of the cut of each subject's rows into scale and score rows.
    trust_splits : bool, default=False
        Accept members that record no training splits.

    Returns
    -------
    Path
        The calibration file.

    Raises
    ------
    DataError
        No held-out rows, too few of them, or models of different vertex spaces.
    """
    paths = [resolve_source(r) for r in runs]
    if not paths:
        raise DataError("give at least one run to calibrate")
    for p in paths:
        if not p.exists():
            raise DataError(f"{p}: no such run folder or model file")
    target = Path(out) if out is not None else default_calibration_path(paths)
    check_output_file(target, (".npz",))
    models = [load_model(p) for p in paths]
    space = models[0].space
    for p, m in zip(paths[1:], models[1:], strict=True):
        if not m.space.same_as(space):
            raise DataError(f"{p}: other subjects or vertices than {paths[0]}; calibrate one model")
    opened = Store(store) if store is not None else None
    pairs = _pairs(paths[0], list(space.subjects), opened)
    kept = held_out_splits(paths, pairs, splits, trust_splits)
    subjects = {}
    for name, st in pairs:
        rows = np.sort(np.concatenate([st.split_rows(name, s) for s in kept]))
        subjects[name] = _subject(models, st, name, rows, seed)
    n_cols = {n: sum(space.n_subject_vertices(n, h) for h in HEMIS) for n in subjects}
    for name, cal in subjects.items():
        if cal.scale.size != n_cols[name]:  # the store's vertices are the model's (checked)
            raise BrainEncoderError(f"{name}: store and model disagree on the vertex count")
    calibration = Calibration([member_identity(p) for p in paths], kept, subjects, seed)
    return write_calibration(calibration, target)
