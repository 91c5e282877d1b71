"""``brainencoder plot``: the figures of a run (maps, ROI bars, learning curves)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.space import GroupSpace
from ..data.layout import HEMIS
from ..util.errors import DataError

__all__ = ["plot_run"]

_LABELS = {
    "score": ("noise-normalized score (%)", 0.0, 100.0),
    "pearson": ("Pearson r", 0.0, None),
    "r2": ("R²", 0.0, None),
}


def plot_run(
    run_dir: str | Path,
    split: str = "testval",
    metrics: list[str] | None = None,
    fsaverage_sphere: dict[str, np.ndarray] | None = None,
) -> list[Path]:
    """Write the figures of a run into ``run_dir/figures``; returns their paths.

    Needs ``run_dir/eval/<split>/per_vertex.npz`` (from ``brainencoder evaluate``).
    """
    import matplotlib.pyplot as plt
    import pandas as pd

    from ..runs.history import run_history
    from ..runs.load import load_model
    from .plotting import plot_learning_curves

    run_dir = Path(run_dir)
    eval_dir = run_dir / "eval" / split
    if not (eval_dir / "per_vertex.npz").exists():
        raise DataError(
            f"{eval_dir}: no evaluation found; run 'brainencoder evaluate "
            f"{run_dir} --split {split}' first"
        )
    with np.load(eval_dir / "per_vertex.npz") as f:
        per_vertex = dict(f)
    if not metrics:
        metrics = ["pearson"] + (["score"] if any(k.endswith(".score") for k in per_vertex) else [])
    space = load_model(run_dir).space
    out = run_dir / "figures"
    out.mkdir(exist_ok=True)
    paths = []
    table = pd.read_csv(eval_dir / "metrics.csv")
    for metric in metrics:
        if not any(k.endswith(f".{metric}") for k in per_vertex):
            raise DataError(f"{eval_dir}: no '{metric}' values (scores need --noise-ceiling)")
        paths += _plot_metric(
            run_dir, space, per_vertex, table, split, metric, out, fsaverage_sphere
        )
    history = run_history(run_dir)  # phase 2 continues phase 1's curves
    if any(records for _, records in history):
        path = out / "learning_curves.png"
        phases = [(run.name, records) for run, records in history]
        plt.close(plot_learning_curves(phases, output_file=path))
        paths.append(path)
    return paths


def _plot_metric(
    run_dir: Path,
    space: GroupSpace,
    per_vertex: dict[str, np.ndarray],
    table,
    split: str,
    metric: str,
    out: Path,
    fsaverage_sphere: dict[str, np.ndarray] | None,
) -> list[Path]:
    """One metric's cortical map per evaluated subject, and its ROI bars.

    ``per_vertex[f"{subject}.{hemi}.{metric}"]`` has shape (n_vertices_hemi,).
    """
    import matplotlib.pyplot as plt

    from .plotting import fsaverage5_maps, plot_roi_bars, plot_surface_map

    label, vmin, vmax = _LABELS[metric]
    paths = []
    evaluated = [s for s in space.subjects if f"{s}.{HEMIS[0]}.{metric}" in per_vertex]
    for subject in evaluated:  # an adapted run is evaluated on its new subject only
        values = {h: per_vertex[f"{subject}.{h}.{metric}"] for h in HEMIS}
        maps = fsaverage5_maps(space, subject, values, fsaverage_sphere)
        path = out / f"{subject}_{metric}_{split}.png"
        fig = plot_surface_map(
            maps,
            f"{subject}: {label} on {split} images",
            label,
            vmin=vmin,
            vmax=vmax,
            output_file=path,
        )
        plt.close(fig)
        paths.append(path)
    if (table.roi_group != "all").any():
        path = out / f"roi_{metric}_{split}.png"
        plt.close(plot_roi_bars(table, metric, output_file=path, ylabel=f"median {label}"))
        paths.append(path)
    return paths
