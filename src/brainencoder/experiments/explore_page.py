"""The page of ``explore``: montage, histogram, cortical map and the HTML template."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.space import GroupSpace
from ..data.sources import ImageSource

__all__ = ["PAGE", "cortex_map", "histogram", "montage"]


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
