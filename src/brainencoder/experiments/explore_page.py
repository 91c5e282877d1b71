"""The page of ``explore``: montage, histogram, cortical map and the HTML template."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.space import GroupSpace
from ..data.sources import ImageSource

__all__ = ["PAGE", "cortex_map", "histogram", "interval_chart", "montage"]


def montage(source: ImageSource, values, order, top: int, out: Path, label: str) -> Path:
    import matplotlib.pyplot as plt

    from ..evaluation.plotting import save_png

    fig, axes = plt.subplots(2, top, figsize=(1.6 * top, 4.0), squeeze=False)
    for row, picks, title in (
        (0, order[:top], "top"),
        (1, order[::-1][:top], "bottom"),
    ):
        for col in range(top):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(picks):
                i = picks[col]
                ax.imshow(source.load(int(i), 128))
                ax.set_title(f"{values[i]:+.2f}", fontsize=9)
        axes[row, 0].text(
            -0.15,
            0.5,
            title,
            transform=axes[row, 0].transAxes,
            rotation=90,
            va="center",
            ha="right",
            fontsize=11,
        )
    fig.suptitle(f"{label}: top and bottom {top} of {len(source)} images")
    fig.tight_layout()
    save_png(fig, out, dpi=110)
    plt.close(fig)
    return out


def histogram(values, threshold: float, out: Path, label: str) -> Path:
    import matplotlib.pyplot as plt

    from ..evaluation.plotting import save_png

    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(values, bins=min(40, max(5, len(values) // 3)), color="#4c72b0")
    ax.axvline(threshold, color="#c44e52", linestyle="--", label="top-K threshold")
    ax.set_xlabel(f"{label} (predicted, z-scored units)")
    ax.set_ylabel("images")
    ax.legend(frameon=False)
    fig.tight_layout()
    save_png(fig, out, dpi=110)
    plt.close(fig)
    return out


def interval_chart(ranking, n: int, k: int, out: Path, label: str, level: float) -> Path:
    """The first ``n`` ranks' values with their calibrated intervals (``explore --interval``).

    ``ranking`` is the ranked table (columns ``value``, ``lower``, ``upper``,
    ``separable``), best first; a rank whose interval overlaps the next one's is
    drawn hollow, and a dotted line marks the top ``k``.
    """
    import matplotlib.pyplot as plt

    from ..evaluation.plotting import save_png

    head = ranking.head(n)
    ranks = np.arange(1, len(head) + 1)
    value, lower, upper = (head[c].to_numpy(float) for c in ("value", "lower", "upper"))
    sep = head["separable"].to_numpy(bool)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.28 * len(head) + 1.5), 3.4))
    ax.errorbar(ranks, value, yerr=[value - lower, upper - value], fmt="none", ecolor="#8c8c8c")
    ax.scatter(ranks[sep], value[sep], color="#4c72b0", zorder=3, label="separable from the next")
    ax.scatter(
        ranks[~sep], value[~sep], facecolor="white", edgecolor="#4c72b0", zorder=3,
        label="interval overlaps the next rank's",
    )  # fmt: skip
    ax.axvline(k + 0.5, color="#c44e52", linestyle=":", label=f"top {k}")
    ax.set_xlabel("rank")
    ax.set_ylabel(f"{label} (predicted)")
    ax.set_title(f"{100 * level:g}% calibrated intervals of the first {len(head)} ranks")
    ax.legend(frameon=False, fontsize=8, loc="upper right")
    fig.tight_layout()
    save_png(fig, out, dpi=110)
    plt.close(fig)
    return out


PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8">
<title>explore: {{ label }}</title>
<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
img{max-width:100%;border:1px solid #eee;margin:6px 0}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}</style>
</head><body>
<h1>Which images drive {{ label }}?</h1>
<p>Run <code>{{ run }}</code>, subject {{ subject }}, {{ n_images }} images from
<code>{{ images }}</code>; ranked by the mean predicted response in
{{ label }} (z-scored units).</p>
<h2>Top and bottom {{ top }}</h2><img alt="montage" src="{{ montage }}">
<h2>Distribution</h2><img alt="histogram" src="{{ histogram }}">
<h2>Cortex: top {{ top }} minus all images</h2><img alt="map" src="{{ map }}">
{% if intervals %}<h2>How sure: {{ level }} intervals</h2>
<img alt="intervals" src="{{ intervals }}">{% endif %}
<h2>Ranking</h2>{% if separability %}<p>{{ separability }}</p>{% endif %}
<table><tr><th>rank</th><th>image</th><th>value</th>{% if level %}<th>{{ level }} interval
</th><th>separable from the next rank</th>{% endif %}</tr>
{% for row in rows %}<tr><td>{{ row.rank }}</td><td>{{ row.image }}</td>
<td>{{ "%.3f"|format(row.value) }}</td>{% if level %}<td>[{{ "%.3f"|format(row.lower) }},
{{ "%.3f"|format(row.upper) }}]</td><td>{{ "yes" if row.separable else "no" }}</td>{% endif %}
</tr>{% endfor %}</table>
<p>Full ranking: <a href="ranking.csv">ranking.csv</a></p>
</body></html>"""


def cortex_map(
    space: GroupSpace,
    subjects: Sequence[str],
    diffs: dict[str, np.ndarray],
    path: Path,
    subject: str,
    k: int,
    label: str,
) -> None:
    """The mean prediction to the top ``k`` images minus all images, on cortex.

    ``diffs[name]`` is that difference at each of the subject's columns, shape (n_lh + n_rh,).
    """
    import matplotlib.pyplot as plt

    from ..evaluation.plotting import plot_difference_map

    fig = plot_difference_map(
        space,
        {name: diffs[name] for name in subjects},
        f"{subject}: mean prediction, top {k} images for {label} minus all images",
        "predicted response difference",
        output_file=path,
    )
    plt.close(fig)
