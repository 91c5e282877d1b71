"""``brainencoder compare``: several runs side by side, with intervals that say what is real.

Every run (encoders, ridge baselines, imported or adapted models) predicts the
same images of one store and split; the table holds the mean Pearson r and
(with noise ceilings) the challenge score per subject and over all subjects'
vertices, the mean r per ROI, and the difference of each run from the first
with a 95% bootstrap interval over images (the images are resampled, every
vertex's r recomputed; the interval moved by the resamples' bias:
:func:`~.compare_stats.shifted_percentiles`), so "+0.4" can be told from noise. A per-ROI
difference chart, a cortical difference map and an HTML page come with it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.regions import RoiFiles, subject_roi_masks
from ..core.space import GroupSpace
from ..data.layout import HEMIS, read_layout
from ..data.store import Store
from ..runs.ensemble import EnsembleModel
from ..util.errors import DataError
from ..util.fileio import atomic_path, write_bytes_atomic
from ..util.ownership import build_owned, check_replaceable
from .compare_stats import pearson_rows, shifted_percentiles, summary

__all__ = ["compare_runs"]

logger = logging.getLogger(__name__)


def compare_runs(
    runs: Sequence[str | Path | Sequence[str | Path]],
    out: str | Path,
    split: str = "testval",
    store: str | Path | None = None,
    noise_ceiling: str | Path | None = None,
    n_boot: int = 200,
    seed: int = 0,
    trust_splits: bool = False,
) -> dict[str, Path]:
    """Compare runs on one split; writes ``comparison.csv``, figures and ``index.html``.

    Parameters
    ----------
    runs : sequence of path or of sequences of paths
        Run folders or model files; the first is the reference of differences.
        An entry that is a sequence of several runs is their ensemble (the
        mean prediction), named ``ensemble(a+b)``.
    out : path
        Output folder (``comparison.csv``, the figures, ``index.html``). It may
        not be, hold or lie inside an input (the store, its data, the noise
        ceilings) nor hold a run or the current folder; an existing folder is
        replaced only if it is empty or an earlier ``compare`` output (never
        files it did not write). It is written aside and moved into place when
        complete.
    split : {"testval", "val", "test"}, default="testval"
        "test" needs held-back responses in ``noise_ceiling``.
    store : path, optional
        Default: the first run's store. Every run folder (ensemble members
        too) must have been trained on it, as ``evaluate`` requires.
    noise_ceiling : path, optional
        ``subjXX/{lh,rh}_noise_ceiling.npy`` (and test responses for "test").
    n_boot : int, default=200
        Bootstrap resamples of the images.
    seed : int, default=0
    trust_splits : bool, default=False
        Compare models that record no training splits on val or testval (see
        :func:`~brainencoder.runs.provenance.check_held_out`).

    Returns
    -------
    dict of str to Path

    Raises
    ------
    CheckpointError
        A run was trained on another store.
    UnsafeOverwriteError
        ``out`` may not be written (nothing is touched).
    """
    import pandas as pd

    from ..runs.load import read_files
    from ..runs.provenance import check_held_out
    from ..runs.run import Run

    if len(runs) < 2:
        raise DataError("compare needs at least two runs")
    members = [[Path(r)] if isinstance(r, (str, Path)) else [Path(m) for m in r] for r in runs]
    for r, parts in zip(runs, members):
        if not isinstance(r, (str, Path)) and len(parts) < 2:
            raise DataError(f"an ensemble needs at least two runs; got {[str(p) for p in parts]}")
    store = Store(store if store is not None else Run(members[0][0]).store_path())
    for path in (p for parts in members for p in parts):
        if path.is_dir():  # as evaluate: a run's numbers on another store would be wrong
            Run(path).check_store(store)
        check_held_out(path, split, [(n, store) for n in store.names], trust_splits)
    names, models = _load_runs(members)
    for label, model in zip(names, models):
        model.space.check_subjects_match(store.space, f"{label} vs {store.path}")
    source = store.manifest["source"]["root"]
    inputs = [store.path, source, noise_ceiling]
    inputs += [f for parts in members for p in parts for f in read_files(p)]
    out = Path(out)
    check_replaceable(out, "compare", inputs)  # before any work
    try:
        layout = read_layout(source, store.names)
    except DataError:
        layout = None
    rng = np.random.default_rng(seed)
    rows, per_vertex, summaries = [], {}, []
    for subject in store.names:
        target, preds, nc = _subject_predictions(
            store, subject, names, models, split, noise_ceiling
        )
        n = target.shape[0]
        samples = [rng.integers(0, n, n) for _ in range(n_boot)]
        full = {name: pearson_rows(p, target, np.arange(n)) for name, p in preds.items()}
        subject_boots = {
            name: [summary(pearson_rows(preds[name], target, s), nc) for s in samples]
            for name in names
        }
        values = {name: summary(full[name], nc) for name in names}
        rows += _difference_rows(subject, values, subject_boots)
        if layout is not None:
            rows += _roi_rows(layout[subject], full, names)
        per_vertex.update({f"{subject}.{name}": full[name] for name in names})
        summaries.append((target.shape[1], values, subject_boots))
    rows += _pooled_rows(summaries)
    table = pd.DataFrame(rows)
    with build_owned(out, "compare", inputs) as work:  # moved into place when complete
        with atomic_path(work / "comparison.csv", suffix=".csv") as tmp:
            table.to_csv(tmp, index=False)
        bars = _roi_bars(table, names, work / "roi_differences.png")
        cortex = _difference_map(
            store, models[0].space, per_vertex, names, work / "difference_map.png"
        )
        page = _page(table, names, [" + ".join(map(str, m)) for m in members], split, bars, cortex)
        write_bytes_atomic(work / "index.html", page)
    return {
        "page": out / "index.html",
        "table": out / "comparison.csv",
        "bars": out / "roi_differences.png",
        "map": out / "difference_map.png",
    }


def _load_runs(members: Sequence[Sequence[Path]]) -> tuple[list[str], list]:
    """Each entry's label and model: a run, or the ensemble of several (unique labels)."""
    from ..runs.load import load_model

    names, models = [], []
    for parts in members:
        labels = [p.name if p.is_dir() else p.stem for p in parts]
        loaded = [load_model(p) for p in parts]
        if len(parts) == 1:
            names.append(labels[0])
            models.append(loaded[0])
        else:
            names.append("ensemble(" + "+".join(labels) + ")")
            models.append(EnsembleModel(loaded, names[-1], labels=labels))
    if len(set(names)) < len(names):
        names = [f"{i + 1}:{n}" for i, n in enumerate(names)]
    return names, models


def _subject_predictions(
    store: Store,
    subject: str,
    names: Sequence[str],
    models: Sequence,
    split: str,
    noise_ceiling: str | Path | None,
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]:
    """The subject's responses (n_images, n_vertices), every run's predictions, its NC."""
    from ..inference.store import predict_store_rows
    from .evaluate import load_noise_ceiling, read_test_responses

    info = store.subject(subject)
    test = split == "test"
    if test:
        target = read_test_responses(noise_ceiling, subject, info.n_test, info.n_vertices)
        image_rows = np.arange(info.n_test)
    else:
        image_rows = store.split_rows(subject, split)
        target = store.read_fmri(subject, image_rows)
    nc = None
    if noise_ceiling is not None:
        nc = np.concatenate(
            [load_noise_ceiling(noise_ceiling, subject, h, info.n_vertices[h]) for h in HEMIS]
        )
    preds = {}
    for name, model in zip(names, models):
        parts = [p for _, p in predict_store_rows(model, store, subject, image_rows, test=test)]
        preds[name] = np.concatenate(parts)
    return target, preds, nc


def _row(
    run: str, subject: str, roi: str, metric: str, value: float, base: float, ci: Sequence[float]
) -> dict:
    low, high = ci
    return {
        "run": run,
        "subject": subject,
        "roi": roi,
        "metric": metric,
        "value": value,
        "diff": value - base,
        "ci_low": low,
        "ci_high": high,
    }


def _difference_rows(
    subject: str,
    values: dict[str, dict[str, float]],
    boots: dict[str, list[dict[str, float]]],
) -> list[dict]:
    """One row per run and metric: value, difference from the first run, 95% interval.

    ``values[run][metric]`` is the summary on all images, ``boots[run][i][metric]``
    on bootstrap sample ``i`` (the same images for every run).
    """
    names = list(values)
    rows = []
    for name in names:
        for metric, value in values[name].items():
            base = values[names[0]][metric]
            diffs = [b[metric] - r[metric] for b, r in zip(boots[name], boots[names[0]])]
            ci = shifted_percentiles(np.asarray(diffs), value - base)
            rows.append(_row(name, subject, "all", metric, value, base, ci))
    return rows


def _roi_rows(subj: RoiFiles, full: dict[str, np.ndarray], names: Sequence[str]) -> list[dict]:
    """Mean Pearson r per run in every named ROI of the subject's label files (no interval).

    ``full[run]`` is the run's r at each of the subject's columns, shape (n_lh + n_rh,).
    """
    rows = []
    for roi in subject_roi_masks(subj):
        if roi.name is None:
            continue
        sel = roi.both()
        base = float(full[names[0]][sel].mean())
        for name in names:
            value = float(full[name][sel].mean())
            rows.append(_row(name, subj.name, roi.name, "pearson", value, base, (np.nan, np.nan)))
    return rows


def _pooled_rows(
    summaries: Sequence[tuple[int, dict[str, dict[str, float]], dict[str, list[dict]]]],
) -> list[dict]:
    """Rows of subject "all": every metric's mean over every vertex of every subject.

    Parameters
    ----------
    summaries : sequence of (n_vertices, values, boots), one per subject
        As passed to :func:`_difference_rows`. A subject's means weigh by its
        vertex count, as in the challenge's score; bootstrap sample ``i`` of
        "all" combines the subjects' samples ``i`` (their images are
        resampled independently).
    """
    w = np.array([n for n, _, _ in summaries], dtype=float)
    w /= w.sum()
    first_values, first_boots = summaries[0][1], summaries[0][2]
    names, metrics = list(first_values), list(next(iter(first_values.values())))
    n_boot = len(first_boots[names[0]])

    def pooled(get) -> dict[str, float]:
        return {m: float(sum(wi * get(s)[m] for wi, s in zip(w, summaries))) for m in metrics}

    values = {name: pooled(lambda s, name=name: s[1][name]) for name in names}
    boots = {
        name: [pooled(lambda s, name=name, i=i: s[2][name][i]) for i in range(n_boot)]
        for name in names
    }
    return _difference_rows("all", values, boots)


def _roi_bars(table, names, path: Path) -> Path:
    import matplotlib.pyplot as plt

    from .plotting import save_png

    sel = table[(table.metric == "pearson") & (table.roi != "all") & (table.run != names[0])]
    per_roi = sel.groupby(["roi", "run"])["diff"].mean().unstack("run")
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(per_roi) + 2) + 2.5, 3.8))
    if len(per_roi):
        per_roi.plot.bar(ax=ax, width=0.8)
        ax.legend(  # beside the axes: it never hides a bar, however many runs
            title="run", frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1)
        )
    ax.axhline(0, color="k", linewidth=0.8)
    ax.set_ylabel(f"mean Pearson r difference vs {names[0]}")
    ax.set_xlabel("ROI (mean over subjects)")
    ax.set_title(f"Per-ROI difference from {names[0]}")
    fig.tight_layout()
    save_png(fig, path, dpi=110)
    plt.close(fig)
    return path


def _difference_map(
    store: Store, space: GroupSpace, per_vertex: dict[str, np.ndarray], names, path: Path
) -> Path:
    """The first subject's r of the last run minus the first's, on cortex.

    ``per_vertex[f"{subject}.{run}"]`` is a run's r, shape (n_lh + n_rh,).
    """
    import matplotlib.pyplot as plt

    from .plotting import plot_difference_map

    subject = store.names[0]
    diff = per_vertex[f"{subject}.{names[-1]}"] - per_vertex[f"{subject}.{names[0]}"]
    fig = plot_difference_map(
        space,
        {subject: diff},
        f"{subject}: Pearson r, {names[-1]} minus {names[0]}",
        "r difference",
        output_file=path,
        limit=float(np.nanpercentile(np.abs(diff), 99)) or 0.1,
    )
    plt.close(fig)
    return path


_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>compare runs</title>
<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
img{max-width:100%;border:1px solid #eee;margin:6px 0}
table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
.sig{font-weight:bold}</style></head><body>
<h1>Runs compared on the {{ split }} split</h1>
<p>Reference: <code>{{ runs[0] }}</code>. Differences are run minus reference; the
95% interval comes from {{ "bootstrap resamples of the images" }}. Bold: the interval
excludes 0.</p>
<table><tr><th>run</th><th>subject</th><th>metric</th><th>value</th><th>difference</th>
<th>95% interval</th></tr>
{% for r in rows %}<tr><td>{{ r.run }}</td><td>{{ r.subject }}</td><td>{{ r.metric }}</td>
<td>{{ "%.4f"|format(r.value) }}</td>
<td class="{{ 'sig' if r.sig else '' }}">{{ "%+.4f"|format(r.diff) }}</td>
<td>[{{ "%+.4f"|format(r.ci_low) }}, {{ "%+.4f"|format(r.ci_high) }}]</td></tr>{% endfor %}
</table>
<h2>Per ROI</h2><img alt="ROI differences" src="{{ bars }}">
<h2>On cortex</h2><img alt="difference map" src="{{ cortex }}">
<p>Every number: <a href="comparison.csv">comparison.csv</a></p>
</body></html>"""


def _page(table, names, runs, split, bars: Path, cortex: Path) -> bytes:
    from ..util.html import render_page

    overall = table[table.roi == "all"].copy()
    overall["sig"] = (overall.ci_low > 0) | (overall.ci_high < 0)
    return render_page(
        _PAGE,
        split=split,
        runs=[str(r) for r in runs],
        rows=overall.to_dict("records"),
        bars=bars.name,
        cortex=cortex.name,
    )
