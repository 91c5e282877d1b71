"""``brainencoder report``: one self-contained HTML page per run.

The page holds the resolved config, the run summary, the evaluation tables,
every figure of ``RUN/figures`` (embedded as base64 PNG) and an interactive
3-D view of the per-vertex score on the inflated fsaverage5 surface (nilearn's
``view_surf``, plotly inlined), so it opens offline in any browser.

A run folder may come from someone else: every string taken from it is
HTML-escaped, and only names that are plain identifiers (subjects like
``subj01``, split folders like ``testval``) reach the surface viewer, whose
page is rendered in a sandboxed frame.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from pathlib import Path

import numpy as np

from ..runs.run import Run
from ..util.errors import CheckpointError, DataError
from ..util.fileio import write_bytes_atomic
from ..util.html import render_page
from ..util.version import __version__

__all__ = ["write_report"]

_SAFE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_SPLITS = ("val", "testval", "train", "all", "test")

logger = logging.getLogger(__name__)

# The page. Every value is escaped by render_page (autoescape) except the score
# tables, which pandas escapes itself (passed as Markup). The script records how
# many figures the browser decoded (checked by a headless-browser test).
_PAGE = """<!DOCTYPE html><html><head><meta charset='utf-8'>
<title>brainencoder report: {{ name }}</title><style>
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; font-size: 13px; }
td, th { border: 1px solid #ccc; padding: 3px 6px; text-align: right; }
img { max-width: 100%; border: 1px solid #eee; margin: 6px 0; }
pre { background: #f6f6f6; padding: 8px; overflow-x: auto; font-size: 12px; }
iframe { width: 100%; height: 620px; border: 1px solid #ccc; }
</style></head><body>
<h1>brainencoder run: {{ name }}</h1>
<p>brainencoder {{ version }}; folder <code>{{ folder }}</code></p>
<h2>Run</h2><table>
{%- for key, value in facts.items() %}
<tr><th>{{ key }}</th><td style='text-align:left'>{{ value }}</td></tr>
{%- endfor %}</table>
{%- if pages %}
<h2>Pages of this run</h2><ul>
{%- for href, text in pages %}<li><a href='{{ href }}'>{{ text }}</a></li>{% endfor %}</ul>
{%- endif %}
{%- for split, table in scores %}
<h2>Scores on the {{ split }} split</h2>
{{ table }}
{%- endfor %}
{%- if figures %}
<h2>Figures</h2>
{%- for stem, data in figures %}
<h3>{{ stem }}</h3><img class='figure' alt='{{ stem }}' src='data:image/png;base64,{{ data }}'>
{%- endfor %}
{%- endif %}
{%- if surface is not none %}
<h2>Interactive surface (drag to rotate)</h2>
<iframe title='surface' sandbox='allow-scripts' srcdoc="{{ surface }}"></iframe>
{%- endif %}
<h2>Config</h2><pre>{{ config }}</pre>
<script>
window.addEventListener("load", () => {
  const figs = [...document.querySelectorAll("img.figure")];
  document.body.dataset.figuresLoaded = figs.filter(i => i.complete && i.naturalWidth > 0).length;
});
</script></body></html>"""


def _surface_view(run_dir: Path, split: str, metric: str, subject: str) -> str:
    from nilearn.plotting import view_surf

    from ..runs.load import load_model
    from .plotting import fsaverage5_maps, fsaverage5_meshes

    with np.load(run_dir / "eval" / split / "per_vertex.npz") as f:
        values = f[f"{subject}.lh.{metric}"]
    fs5 = fsaverage5_maps(load_model(run_dir).space, subject, {"lh": values})["lh"]
    meshes, sulcal = fsaverage5_meshes()
    view = view_surf(
        meshes["inflated"].parts["left"],
        np.nan_to_num(fs5, nan=0.0),
        bg_map=sulcal.data.parts["left"],
        cmap="inferno",
        symmetric_cmap=False,
        vmin=0.0,
        threshold=1e-6,
        title=f"{subject} lh: {metric} ({split})",
    )
    return view.get_standalone()


def _facts(run: Run, summary: dict) -> dict[str, str]:
    """A readable header: data, subjects, model, training, time, device."""
    facts: dict[str, str] = {}
    try:
        config = run.config
    except CheckpointError:
        config = {}
    header = config.get("run", {}) if isinstance(config.get("run"), dict) else {}
    model = config.get("model", {}) if isinstance(config.get("model"), dict) else {}
    facts["model kind"] = run.model_kind
    facts["store"] = str(header.get("store", "?"))
    if isinstance(summary, dict):
        if "subject" in summary:
            facts["adapted subject"] = str(summary["subject"])
        for key, label in (
            ("epochs_run", "epochs run"),
            ("best_epoch", "best epoch (0-based)"),
            ("steps", "optimizer steps"),
            ("trainable_parameters", "trainable parameters"),
            ("device", "device"),
            ("world_size", "processes"),
        ):
            if key in summary:
                facts[label] = str(summary[key])
        if "seconds" in summary:
            facts["time"] = f"{float(summary['seconds']) / 60:.1f} min"
    if config.get("encoder"):
        facts["encoder preset"] = str(config["encoder"])
    if model:
        facts["model overrides"] = json.dumps(model)
    for key in ("lr", "batch_size", "epochs", "loss", "train_trunk", "train_on"):
        if key in config:
            facts[key] = json.dumps(config[key])
    facts["brainencoder"] = str(header.get("brainencoder_version", "?"))
    return facts


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the run's report page.

    Parameters
    ----------
    run_dir : path
        A run folder (with ``config.yaml``).
    out : path, optional
        Default ``run_dir/report.html``.

    Returns
    -------
    Path
        The page written.
    """
    run_dir = Path(run_dir)
    run = Run(run_dir)
    if not run.config_file.exists():
        raise DataError(f"{run_dir}: not a run directory (no config.yaml)")
    out = Path(out) if out is not None else run_dir / "report.html"
    pages = sorted(p for p in run_dir.glob("*/**/index.html") if p.resolve() != out.resolve())
    scores, view_source = _scores(run_dir)
    figures = sorted((run_dir / "figures").glob("*.png")) if (run_dir / "figures").exists() else []
    page = render_page(
        _PAGE,
        name=run_dir.name,
        version=__version__,
        folder=str(run_dir),
        facts=_facts(run, run.summary()),
        pages=[(str(p.relative_to(run_dir)), str(p.parent.relative_to(run_dir))) for p in pages],
        scores=scores,
        figures=[(f.stem, base64.b64encode(f.read_bytes()).decode()) for f in figures],
        surface=None if view_source is None else _surface_view(run_dir, *view_source),
        config=run.config_file.read_text(),
    )
    write_bytes_atomic(out, page)
    return out


def _scores(run_dir: Path) -> tuple[list[tuple[str, str]], tuple[str, str, str] | None]:
    """Per evaluated split, its table of scores per subject (HTML); what the 3-D view shows.

    Returns
    -------
    scores : list of (split, table)
        ``eval/<split>/metrics.csv`` of the known splits, each as an HTML table
        (every value escaped by pandas; a ``Markup``, so the page keeps its tags).
    view_source : (split, metric, subject) or None
        The first split's score (or Pearson r) of its first subject whose name
        is a plain identifier; None where there is none.
    """
    import pandas as pd
    from markupsafe import Markup

    scores, view_source = [], None
    for csv in sorted((run_dir / "eval").glob("*/metrics.csv")):
        split = csv.parent.name
        if split not in _SPLITS:
            logger.warning("skipping %s: not an evaluation split folder", csv)
            continue
        table = pd.read_csv(csv)
        sel = table[(table.hemisphere == "both") & (table.roi_group == "all")]
        pivot = sel.pivot_table(index="subject", columns=["metric", "statistic"], values="value")
        scores.append(
            (split, Markup(pivot.to_html(float_format=lambda v: f"{v:.4f}", escape=True)))
        )
        metric = "score" if (table.metric == "score").any() else "pearson"
        subjects = sorted(str(s) for s in set(table.subject) - {"all"} if _SAFE_NAME.match(str(s)))
        if subjects:
            view_source = view_source or (split, metric, subjects[0])
    return scores, view_source
