"""Figures: cortical maps on fsaverage5, per-ROI bars, learning curves.

Surface maps render offline with the fsaverage5 meshes nilearn ships
(inflated and flat, plus sulcal depth as background). Challenge data live in
fsaverage space (163,842 vertices per hemisphere); fsaverage5's 10,242
vertices are the first 10,242 fsaverage vertices. See
:func:`fsaverage_to_fsaverage5` for how maps are resampled.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..core.space import GroupSpace, ico_vertices
from ..data.layout import HEMIS

__all__ = [
    "fsaverage5_maps",
    "fsaverage5_meshes",
    "fsaverage_to_fsaverage5",
    "plot_difference_map",
    "plot_learning_curves",
    "plot_roi_bars",
    "plot_surface_map",
]

logger = logging.getLogger(__name__)
_N_FS5 = ico_vertices(5)  # fsaverage5: a property of the mesh, not of the data
_PART = {"lh": "left", "rh": "right"}


def fsaverage5_meshes():
    """nilearn's fsaverage5 inflated meshes and sulcal depth, per hemisphere."""
    from nilearn.datasets import load_fsaverage, load_fsaverage_data

    meshes = load_fsaverage("fsaverage5")
    sulcal = load_fsaverage_data(mesh="fsaverage5", mesh_type="inflated", data_type="sulcal")
    return meshes, sulcal


def save_png(fig, output_file: str | Path, dpi: int = 100) -> Path:
    """Save a figure as PNG atomically (a killed run never leaves half a PNG)."""
    from ..util.fileio import atomic_path

    with atomic_path(output_file, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return Path(output_file)


_save = save_png


def fsaverage_to_fsaverage5(
    values: np.ndarray, hemi: str, fsaverage_sphere: np.ndarray | None = None
) -> np.ndarray:
    """Resample a per-vertex fsaverage map to fsaverage5.

    Method: every measured fsaverage vertex is assigned to its nearest
    fsaverage5 vertex on the sphere and each fsaverage5 vertex shows the mean
    of the values assigned to it (so every measured value is represented, not
    only those of the first 10,242 vertices). The nearest-vertex search needs
    the fsaverage sphere coordinates (``fsaverage_sphere``, e.g. FreeSurfer's
    ``surf/lh.sphere`` read with ``nibabel.freesurfer.read_geometry``). Without
    them, only the vertices shared with fsaverage5 (indices < 10,242, where
    the two meshes coincide) are shown and a warning says how many measured
    vertices are left out; for the synthetic dataset, whose vertices are all
    fsaverage5 vertices, this is exact.

    Parameters
    ----------
    values : ndarray of shape (n_fsaverage,)
        NaN where nothing was measured.
    hemi : {"lh", "rh"}
    fsaverage_sphere : ndarray of shape (n_fsaverage, 3), optional

    Returns
    -------
    ndarray of shape (10242,)
        NaN where no measured vertex maps.
    """
    values = np.asarray(values, dtype=np.float64)
    measured = np.isfinite(values)
    if fsaverage_sphere is None:
        out = np.full(_N_FS5, np.nan)
        out[: min(_N_FS5, values.size)] = values[:_N_FS5]
        lost = int(measured[_N_FS5:].sum())
        if lost:
            logger.warning(
                "%s: %d of %d measured vertices lie beyond fsaverage5 and are not "
                "shown; pass the fsaverage sphere to include them",
                hemi,
                lost,
                int(measured.sum()),
            )
        return out
    from scipy.spatial import cKDTree

    meshes, _ = fsaverage5_meshes()
    fs5 = np.asarray(meshes["sphere"].parts[_PART[hemi]].coordinates, dtype=np.float64)
    fs5 /= np.linalg.norm(fs5, axis=1, keepdims=True)
    pts = np.asarray(fsaverage_sphere, dtype=np.float64)[measured]
    pts /= np.linalg.norm(pts, axis=1, keepdims=True)
    _, nearest = cKDTree(fs5).query(pts)
    sums = np.bincount(nearest, weights=values[measured], minlength=_N_FS5)
    counts = np.bincount(nearest, minlength=_N_FS5)
    with np.errstate(invalid="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def fsaverage5_maps(
    space: GroupSpace,
    subject: str,
    values: Mapping[str, np.ndarray],
    fsaverage_sphere: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """A subject's challenge-space values as fsaverage5 maps, per hemisphere.

    Parameters
    ----------
    space : GroupSpace
        The model's vertex space (which fsaverage vertex each column is).
    subject : str
    values : mapping of str to ndarray of shape (n_vertices_hemi,)
        Per hemisphere (one or both), the subject's values in challenge space.
    fsaverage_sphere : mapping of str to ndarray of shape (n_fsaverage, 3), optional
        Per hemisphere, passed to :func:`fsaverage_to_fsaverage5`.

    Returns
    -------
    dict of str to ndarray of shape (10242,)
        The hemispheres of ``values``; NaN where the subject has no vertex.
    """
    return {
        h: fsaverage_to_fsaverage5(
            space.to_fsaverage(subject, h, v),
            h,
            None if fsaverage_sphere is None else fsaverage_sphere[h],
        )
        for h, v in values.items()
    }


def plot_difference_map(
    space: GroupSpace,
    values: Mapping[str, np.ndarray],
    title: str,
    colorbar_label: str,
    output_file: str | Path | None = None,
    limit: float | None = None,
):
    """Per-vertex differences on cortex, on a blue-red scale symmetric about 0.

    Parameters
    ----------
    space : GroupSpace
        The model's vertex space.
    values : mapping of str to ndarray of shape (n_lh + n_rh,)
        Per subject, a difference at each of its challenge columns (lh then
        rh). Several subjects are averaged on fsaverage5 where any has a value.
    title, colorbar_label : str
    output_file : path, optional
        Save the figure there (PNG).
    limit : float, optional
        The colour range is ``[-limit, limit]``; default the 99th percentile of
        the map's absolute values (1.0 where they are all 0).

    Returns
    -------
    matplotlib.figure.Figure
    """
    layers = [fsaverage5_maps(space, s, space.split_columns(s, v)) for s, v in values.items()]
    maps = {}
    for hemi in HEMIS:
        with warnings.catch_warnings():  # vertices no subject has stay NaN (background)
            warnings.simplefilter("ignore", RuntimeWarning)
            maps[hemi] = np.nanmean(np.stack([layer[hemi] for layer in layers]), 0)
    if limit is None:
        limit = float(np.nanpercentile(np.abs(np.concatenate(list(maps.values()))), 99)) or 1.0
    return plot_surface_map(
        maps,
        title,
        colorbar_label,
        vmin=-limit,
        vmax=limit,
        cmap="RdBu_r",
        output_file=output_file,
    )


def plot_surface_map(
    maps: Mapping[str, np.ndarray],
    title: str,
    colorbar_label: str,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "inferno",
    output_file: str | Path | None = None,
):
    """Inflated (posterior view) and flat maps of both hemispheres.

    Parameters
    ----------
    maps : mapping of str to ndarray of shape (10242,)
        Per hemisphere, fsaverage5 values (NaN: not measured, shown as background).
    title : str
    colorbar_label : str
        Quantity and unit, e.g. "noise-normalized score (%)".
    vmin, vmax : float, optional
        Colour range; default the 1st and 99th percentiles.
    cmap : str, default="inferno"
    output_file : path, optional
        Save the figure there (PNG); it is also returned.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    from nilearn.plotting import plot_surf_stat_map

    meshes, sulcal = fsaverage5_meshes()
    finite = np.concatenate([m[np.isfinite(m)] for m in maps.values()])
    if vmin is None:
        vmin = float(np.percentile(finite, 1)) if finite.size else 0.0
    if vmax is None:
        vmax = float(np.percentile(finite, 99)) if finite.size else 1.0
    vmax = max(vmax, vmin + 1e-6)
    fig, axes = plt.subplots(2, 2, figsize=(10, 8.5), subplot_kw={"projection": "3d"})
    for col, hemi in enumerate(HEMIS):
        data = np.nan_to_num(np.clip(maps[hemi], vmin, vmax), nan=vmin)
        masked = np.where(np.isfinite(maps[hemi]), data, np.nan)
        for row, (mesh, view) in enumerate((("inflated", "posterior"), ("flat", (90, 270)))):
            ax = axes[row, col]
            plot_surf_stat_map(
                meshes[mesh].parts[_PART[hemi]],
                masked,
                hemi="left" if hemi == "lh" else "right",
                bg_map=sulcal.data.parts[_PART[hemi]],
                view=view,
                cmap=cmap,
                colorbar=False,
                vmin=vmin,
                vmax=vmax,
                engine="matplotlib",
                axes=ax,
                figure=fig,
                threshold=None,
                bg_on_data=False,
            )
            ax.set_title(f"{hemi} ({'left' if hemi == 'lh' else 'right'}), {mesh}", fontsize=11)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(vmin, vmax))
    cbar = fig.colorbar(sm, ax=axes.ravel().tolist(), shrink=0.6, pad=0.02)
    cbar.set_label(colorbar_label)
    fig.suptitle(title, fontsize=14)
    if output_file is not None:
        _save(fig, output_file)
    return fig


def plot_roi_bars(
    table,
    metric: str,
    statistic: str = "median",
    output_file: str | Path | None = None,
    ylabel: str | None = None,
):
    """Per-ROI bars, one bar per subject, from an evaluation table.

    Parameters
    ----------
    table : pandas.DataFrame
        Rows of :func:`brainencoder.evaluation.evaluate.evaluate_run` (columns subject,
        hemisphere, roi_group, roi, metric, statistic, value).
    metric : str
        e.g. "pearson", "r2", "score".
    statistic : {"median", "mean"}, default="median"
    output_file : path, optional
    ylabel : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    sel = table[
        (table.metric == metric)
        & (table.statistic == statistic)
        & (table.hemisphere == "both")
        & (table.roi_group != "all")
    ]
    rois = list(dict.fromkeys(sel.roi))
    subjects = sorted(set(sel.subject))
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(rois) * max(1, len(subjects)) / 2), 4))
    width = 0.8 / max(1, len(subjects))
    for i, subject in enumerate(subjects):
        vals = [sel[(sel.subject == subject) & (sel.roi == r)].value.mean() for r in rois]
        ax.bar(np.arange(len(rois)) + i * width, vals, width, label=subject)
    ax.set_xticks(np.arange(len(rois)) + 0.4 - width / 2, rois, rotation=45, ha="right")
    ax.set_ylabel(ylabel or f"{statistic} {metric}")
    ax.set_title(f"{statistic} {metric} per ROI")
    ax.axhline(0, color="k", lw=0.5)
    ax.legend(fontsize=8)
    fig.tight_layout()
    if output_file is not None:
        _save(fig, output_file)
    return fig


def plot_learning_curves(
    phases: Sequence[tuple[str, Sequence[Mapping]]],
    output_file: str | Path | None = None,
):
    """Training loss per step and validation metrics per epoch from ``metrics.jsonl``.

    Parameters
    ----------
    phases : sequence of (label, records)
        The records of one run, or of several runs one after the other (a run
        and those it was initialized from, oldest first): steps and epochs
        continue across them, and each boundary is a dashed line labelled with
        the next phase.
    output_file : path, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    step0 = epoch0 = 0
    keys = (("val/r2_median", "median R²", "C0"), ("val/pearson_median", "median Pearson r", "C1"))
    for number, (label, recs) in enumerate(phases):
        train = [r for r in recs if "train/loss" in r and "step" in r]
        val = [r for r in recs if "val/r2_median" in r and "epoch" in r]
        if number > 0:
            for ax, x in ((ax1, step0), (ax2, epoch0 + 0.5)):
                ax.axvline(x, color="0.5", linestyle="--", linewidth=1)
                ax.text(x, 1.0, f" {label}", transform=ax.get_xaxis_transform(), va="top")
        if train:
            ax1.plot([step0 + r["step"] for r in train], [r["train/loss"] for r in train], "C0")
        for key, name, color in keys:
            if val and all(key in r for r in val):
                ax2.plot(
                    [epoch0 + r["epoch"] + 1 for r in val],
                    [r[key] for r in val],
                    marker="o",
                    color=color,
                    label=name if number == 0 or not ax2.get_legend_handles_labels()[0] else None,
                )
        step0 += max((r["step"] for r in train), default=0)
        epoch0 += max((r["epoch"] + 1 for r in val), default=0)
    ax1.set_xlabel("optimizer step")
    ax1.set_ylabel("training loss")
    ax1.set_title("training loss")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation score")
    ax2.set_title("validation (all subjects, all vertices)")
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(loc="lower right")
    fig.tight_layout()
    if output_file is not None:
        _save(fig, output_file)
    return fig
