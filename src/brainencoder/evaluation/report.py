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
import html
import json
import logging
import re
from pathlib import Path

import numpy as np

from ..runs.run import Run
from ..util.errors import CheckpointError, DataError
from ..util.fileio import write_bytes_atomic
from ..util.version import __version__

__all__ = ["write_report"]

_SAFE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_SPLITS = ("val", "testval", "train", "all", "test")

logger = logging.getLogger(__name__)

_STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; font-size: 13px; }
td, th { border: 1px solid #ccc; padding: 3px 6px; text-align: right; }
img { max-width: 100%; border: 1px solid #eee; margin: 6px 0; }
pre { background: #f6f6f6; padding: 8px; overflow-x: auto; font-size: 12px; }
iframe { width: 100%; height: 620px; border: 1px solid #ccc; }
"""


# records how many figures the browser decoded (checked by a headless-browser test)
_LOADED_SCRIPT = """<script>
window.addEventListener("load", () => {
  const figs = [...document.querySelectorAll("img.figure")];
  document.body.dataset.figuresLoaded = figs.filter(i => i.complete && i.naturalWidth > 0).length;
});
</script>"""


def _surface_view(run_dir: Path, split: str, metric: str, subject: str) -> str:
    from nilearn.plotting import view_surf

    from ..runs.load import load_model
    from .figures import to_fsaverage
    from .plotting import fsaverage5_meshes, fsaverage_to_fsaverage5

    with np.load(run_dir / "eval" / split / "per_vertex.npz") as f:
        values = f[f"{subject}.lh.{metric}"]
    space = load_model(run_dir).space
    fs5 = fsaverage_to_fsaverage5(to_fsaverage(space, subject, "lh", values), "lh")
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
    """Write ``run_dir/report.html`` (or ``out``); returns its path."""
    import pandas as pd

    run_dir = Path(run_dir)
    if not Run(run_dir).config_file.exists():
        raise DataError(f"{run_dir}: not a run directory (no config.yaml)")
    out = Path(out) if out is not None else run_dir / "report.html"
    parts = [
        f"<h1>brainencoder run: {html.escape(run_dir.name)}</h1>",
        f"<p>brainencoder {__version__}; folder <code>{html.escape(str(run_dir))}</code></p>",
    ]
    run = Run(run_dir)
    facts = _facts(run, run.summary())
    parts.append(
        "<h2>Run</h2><table>"
        + "".join(
            f"<tr><th>{html.escape(k)}</th><td style='text-align:left'>{html.escape(v)}</td></tr>"
            for k, v in facts.items()
        )
        + "</table>"
    )
    pages = sorted(p for p in run_dir.glob("*/**/index.html") if p.resolve() != out.resolve())
    if pages:
        parts.append(
            "<h2>Pages of this run</h2><ul>"
            + "".join(
                f"<li><a href='{html.escape(str(p.relative_to(run_dir)), quote=True)}'>"
                f"{html.escape(str(p.parent.relative_to(run_dir)))}</a></li>"
                for p in pages
            )
            + "</ul>"
        )
    view_source = None
    for csv in sorted((run_dir / "eval").glob("*/metrics.csv")):
        split = csv.parent.name
        if split not in _SPLITS:
            logger.warning("skipping %s: not an evaluation split folder", csv)
            continue
        table = pd.read_csv(csv)
        sel = table[(table.hemisphere == "both") & (table.roi_group == "all")]
        pivot = sel.pivot_table(index="subject", columns=["metric", "statistic"], values="value")
        parts.append(f"<h2>Scores on the {html.escape(split)} split</h2>")
        parts.append(pivot.to_html(float_format=lambda v: f"{v:.4f}", escape=True))
        metric = "score" if (table.metric == "score").any() else "pearson"
        subjects = sorted(str(s) for s in set(table.subject) - {"all"} if _SAFE_NAME.match(str(s)))
        if subjects:
            view_source = view_source or (split, metric, subjects[0])
    figures = sorted((run_dir / "figures").glob("*.png")) if (run_dir / "figures").exists() else []
    if figures:
        parts.append("<h2>Figures</h2>")
    for fig in figures:
        data = base64.b64encode(fig.read_bytes()).decode()
        parts.append(
            f"<h3>{html.escape(fig.stem)}</h3>"
            f"<img class='figure' alt='{html.escape(fig.stem)}' "
            f"src='data:image/png;base64,{data}'>"
        )
    if view_source is not None:
        parts.append("<h2>Interactive surface (drag to rotate)</h2>")
        page = _surface_view(run_dir, *view_source)
        parts.append(
            "<iframe title='surface' sandbox='allow-scripts' "
            f'srcdoc="{html.escape(page, quote=True)}"></iframe>'
        )
    parts.append(
        "<h2>Config</h2><pre>" + html.escape(Run(run_dir).config_file.read_text()) + "</pre>"
    )
    doc = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>brainencoder report: "
        f"{html.escape(run_dir.name)}</title><style>{_STYLE}</style></head><body>"
        + "\n".join(parts)
        + _LOADED_SCRIPT
        + "</body></html>"
    )
    write_bytes_atomic(out, doc.encode())
    return out
