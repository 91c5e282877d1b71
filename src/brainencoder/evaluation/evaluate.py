"""``brainencoder evaluate``: per-vertex metrics of a run on a store split, by ROI."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..core.metrics import aggregate, noise_normalized_score
from ..data.layout import HEMIS, read_layout
from ..data.store import Store
from ..inference.store import subject_stats
from ..runs.load import load_model
from ..runs.provenance import check_held_out
from ..runs.run import Run
from ..util.errors import DataError
from ..util.fileio import atomic_path
from ..util.ownership import UnsafeOverwriteError, check_output_location

__all__ = [
    "eval_folder",
    "evaluate_run",
    "load_noise_ceiling",
    "read_numeric_npy",
    "read_test_responses",
]

logger = logging.getLogger(__name__)


def load_noise_ceiling(folder: str | Path, subject: str, hemi: str, n_vertices: int) -> np.ndarray:
    """``folder/subjXX/{hemi}_noise_ceiling.npy`` as fractions, checked for shape.

    Values above 1 are taken as percentages and divided by 100, with a warning.
    """
    path = Path(folder) / subject / f"{hemi}_noise_ceiling.npy"
    try:
        nc = np.load(path, allow_pickle=False).astype(np.float64)
    except FileNotFoundError:
        raise DataError(f"{path}: noise-ceiling file not found") from None
    except ValueError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    if nc.shape != (n_vertices,):
        raise DataError(f"{path}: shape {nc.shape}, expected ({n_vertices},)")
    if not np.isfinite(nc).all() or nc.min() < 0:
        raise DataError(f"{path}: noise ceilings must be finite and >= 0")
    if nc.max() > 1.0 + 1e-6:
        if nc.max() > 100.0 + 1e-6:
            raise DataError(f"{path}: noise ceilings above 100; expected fractions or percent")
        logger.warning("%s: noise ceilings look like percentages; dividing by 100", path)
        nc = nc / 100.0
    return nc


def read_numeric_npy(path: str | Path, what: str) -> np.ndarray:
    """The finite real numbers of the .npy file ``path`` (never unpickled).

    Parameters
    ----------
    path : path
    what : str
        What the file holds, for messages ("held-back test responses").

    Raises
    ------
    DataError
        One line naming the file: missing, unreadable, pickled objects, not
        real numbers, or NaN / inf.
    """
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except (ValueError, OSError, EOFError) as exc:
        reason = " ".join(str(exc).split())
        raise DataError(
            f"{path}: cannot read {what} ({reason}); it must be a .npy array of numbers "
            "(pickled objects are never loaded)"
        ) from None
    if not isinstance(arr, np.ndarray):  # an .npz archive under a .npy name
        arr.close()
        raise DataError(f"{path}: {what} must be a .npy array, not an .npz archive")
    if arr.dtype.kind not in "fiu":
        raise DataError(f"{path}: {what} of dtype {arr.dtype}; expected real numbers")
    if not np.isfinite(arr).all():
        raise DataError(f"{path}: {what} hold NaN or inf values")
    return arr


def read_test_responses(
    folder: str | Path | None, subject: str, n_test: int, n_vertices: dict[str, int]
) -> np.ndarray:
    """Held-back test responses ``folder/subject/{lh,rh}_test_fmri.npy``, (n_test, n_lh + n_rh)."""
    if folder is None:
        raise DataError(
            "split 'test' needs held-back responses: pass --noise-ceiling DIR "
            "holding subjXX/{lh,rh}_test_fmri.npy (e.g. a synthetic truth folder)"
        )
    parts = []
    for h in HEMIS:
        path = Path(folder) / subject / f"{h}_test_fmri.npy"
        arr = read_numeric_npy(path, "held-back test responses")
        if arr.shape != (n_test, n_vertices[h]):
            raise DataError(f"{path}: shape {arr.shape}, expected {(n_test, n_vertices[h])}")
        parts.append(arr)
    return np.concatenate(parts, axis=1)


def _layout(store: Store, seen: dict[Path, Any]) -> Any:
    """The ROI labels of the data ``store`` was prepared from (None when unreadable), once."""
    if store.path not in seen:
        try:
            seen[store.path] = read_layout(store.manifest["source"]["root"], store.names)
        except DataError as exc:
            logger.warning("ROI tables skipped: cannot read the source dataset (%s)", exc)
            seen[store.path] = None
    return seen[store.path]


def eval_folder(
    run_dir: Path, split: str, out_dir: str | Path | None, inputs: list[Path | None]
) -> Path:
    """Where ``evaluate`` writes, checked before any work.

    The default, ``RUN/eval/<split>``, must be the run's own folder: a
    symbolic link there (to anywhere) is refused, and a model file, which has
    no run folder, needs ``out_dir``.

    Raises
    ------
    DataError, UnsafeOverwriteError
        Naming the path and what to do.
    """
    if out_dir is not None:
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise UnsafeOverwriteError(f"{out} exists and is not a folder; choose another --out")
        check_output_location(out, [*inputs, run_dir])
        return out
    if not run_dir.is_dir():
        raise DataError(
            f"{run_dir}: a model file has no run folder to hold eval/{split}; pass --out DIR"
        )
    out = run_dir / "eval" / split
    for part in (out.parent, out):
        if part.is_symlink() or (part.exists() and not part.is_dir()):
            raise UnsafeOverwriteError(
                f"{part} is a symbolic link or not a folder; evaluate writes only into the "
                "run's own eval folder: remove it, or pass --out DIR"
            )
    return out


def evaluate_run(
    run_dir: str | Path,
    split: str = "testval",
    store: Store | str | Path | None = None,
    noise_ceiling: str | Path | None = None,
    out_dir: str | Path | None = None,
    trust_splits: bool = False,
):
    """Evaluate a run on a split; write a tidy table and per-vertex values.

    Parameters
    ----------
    run_dir : path
        Encoder or baseline run directory.
    split : {"val", "testval", "train", "all", "test"}, default="testval"
        "test" scores the test images against held-back responses
        ``noise_ceiling/subjXX/{lh,rh}_test_fmri.npy`` (the synthetic truth).
    store : Store or path, optional
        Default: the store the run was trained on.
    noise_ceiling : path, optional
        Folder with ``subjXX/{lh,rh}_noise_ceiling.npy`` (fractions); adds the
        noise-normalized challenge score.
    out_dir : path, optional
        Default ``run_dir/eval/<split>`` (a model file has no run folder: pass it).
    trust_splits : bool, default=False
        Score a model that records no training splits on val or testval (see
        :func:`~brainencoder.runs.provenance.check_held_out`).

    Returns
    -------
    table : pandas.DataFrame
        Columns subject, hemisphere, roi_group, roi, metric, statistic,
        n_vertices, value. Also written as ``metrics.csv``; per-vertex values
        go to ``per_vertex.npz`` (keys ``subjXX.lh.pearson`` ...).
    """
    import pandas as pd

    run_dir = Path(run_dir)
    if store is not None and not isinstance(store, Store):
        store = Store(store)
    if store is None and not run_dir.is_dir():
        raise DataError(f"{run_dir}: a model file records no store; pass --store STORE")
    out_dir = eval_folder(run_dir, split, out_dir, [store.path if store else None])
    model = load_model(run_dir)
    if store is not None:
        model.space.check_subjects_match(store.space, str(store.path))  # a subset is fine
    pairs = Run(run_dir).subject_stores(model.space.subjects, store)
    check_held_out(run_dir, split, pairs, trust_splits)
    layouts: dict[Path, Any] = {}
    rows_out, per_vertex = [], {}
    for name, store in pairs:  # every subject on the store (and splits) it was trained on
        layout = _layout(store, layouts)
        metrics = _subject_metrics(model, store, name, split, noise_ceiling)
        by_hemi = {metric: model.space.split_columns(name, v) for metric, v in metrics.items()}
        for metric, values in by_hemi.items():
            for h in HEMIS:
                per_vertex[f"{name}.{h}.{metric}"] = values[h].astype(np.float32)
        rows_out += _roi_rows(name, by_hemi, layout)
    rows_out += _overall_rows(per_vertex)
    table = pd.DataFrame(rows_out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "metrics.csv", suffix=".csv") as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(out_dir / "per_vertex.npz", suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **per_vertex)
    return table


def _subject_metrics(
    model: Any, store: Store, name: str, split: str, noise_ceiling: str | Path | None
) -> dict[str, np.ndarray]:
    """Per-vertex pearson and r2 of subject ``name`` on ``split`` (and scores, with ceilings)."""
    info = store.subject(name)
    if split == "test":
        truth = read_test_responses(noise_ceiling, name, info.n_test, info.n_vertices)
        rows = np.arange(info.n_test)
        targets = lambda r: truth[r]  # noqa: E731
    else:
        rows = store.split_rows(name, split)
        targets = lambda r: store.read_fmri(name, r)  # noqa: E731
    stats = subject_stats(model, store, name, rows, targets, test=split == "test")
    metrics = {"pearson": stats.pearson(), "r2": stats.r2()}
    if noise_ceiling is not None:
        nc = np.concatenate(
            [load_noise_ceiling(noise_ceiling, name, h, info.n_vertices[h]) for h in HEMIS]
        )
        metrics["score"] = noise_normalized_score(metrics["pearson"], nc)  # the devkit's
        metrics["score_nc_positive"] = noise_normalized_score(metrics["pearson"], nc, "nc_positive")
    return metrics


def _roi_rows(name: str, by_hemi: dict[str, dict[str, np.ndarray]], layout: Any) -> list[dict]:
    """Table rows of subject ``name``: each metric's mean and median by hemisphere and ROI.

    ``by_hemi`` maps each metric to its values per hemisphere; without a
    ``layout`` (the source dataset unreadable) only the hemisphere rows.
    """
    rois = mappings = None
    if layout is not None:
        subj = layout[name]
        rois = {g: {h: subj.load_rois(g, h) for h in HEMIS} for g in subj.roi_groups}
        mappings = {g: subj.load_mapping(g) for g in subj.roi_groups}
    rows = []
    for metric, values in by_hemi.items():
        for row in aggregate(values, rois, mappings):
            for statistic in ("mean", "median"):
                rows.append(
                    {
                        "subject": name,
                        "hemisphere": row["hemisphere"],
                        "roi_group": row["roi_group"],
                        "roi": row["roi"],
                        "metric": metric,
                        "statistic": statistic,
                        "n_vertices": row["n_vertices"],
                        "value": row[statistic],
                    }
                )
    return rows


def _overall_rows(per_vertex: dict[str, np.ndarray]) -> list[dict]:
    """Table rows of every subject's vertices together: mean and median of each metric."""
    rows = []
    for metric in ("pearson", "r2", "score", "score_nc_positive"):
        keys = [k for k in per_vertex if k.endswith(f".{metric}")]
        if keys:
            allv = np.concatenate([per_vertex[k] for k in keys]).astype(np.float64)
            finite = allv[np.isfinite(allv)]
            for statistic, fn in (("mean", np.mean), ("median", np.median)):
                rows.append(
                    {
                        "subject": "all",
                        "hemisphere": "both",
                        "roi_group": "all",
                        "roi": "all",
                        "metric": metric,
                        "statistic": statistic,
                        "n_vertices": int(finite.size),
                        "value": float(fn(finite)),
                    }
                )
    return rows


def summary_table(table) -> str:
    """A short text table: per subject and overall, median and mean of each metric."""
    sel = table[(table.hemisphere == "both") & (table.roi_group == "all")]
    pivot = sel.pivot_table(index="subject", columns=["metric", "statistic"], values="value")
    return pivot.to_string(float_format=lambda v: f"{v:.4f}")
