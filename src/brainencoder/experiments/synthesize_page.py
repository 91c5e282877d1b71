"""The page of ``brainencoder synthesize``: the images, their values vs the pool's best, cortex.

Written beside (and in the style of) ``explore``'s page: a montage of the
images made (kept, then rejected), a bar chart of each image's predicted ROI
value next to the best natural image of the pool by the member that checked
it, and the cortical map of the response each kept image evokes (the
ensemble's prediction minus its mean over the pool, or the prediction itself
without a pool).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..util.fileio import atomic_path, write_bytes_atomic
from ..util.html import render_page

__all__ = ["save_image", "write_page"]

_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8">
<title>synthesize: {{ label }}</title>
<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
img{max-width:100%;border:1px solid #eee;margin:6px 0}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}</style>
</head><body>
<h1>Images made for {{ label }}</h1>
<p>Subject {{ subject }}; {{ n_members }} model(s): {% for r in runs %}<code>{{ r }}</code>
{% endfor %}. {{ n }} images made by gradient ascent on the predicted
{{ label }} (z-scored units) through trunk and readout, {{ steps }} steps each;
{{ n_kept }} kept. {{ check }}</p>
<h2>The images</h2><img alt="montage" src="montage.png">
<h2>Predicted {{ label }} vs the pool's best natural image</h2><img alt="values" src="values.png">
<h2>Cortex: the response each kept image evokes</h2>
<p>{{ map_note }}</p>
{% for m in maps %}<h3>{{ m.image }}</h3><img alt="{{ m.image }}" src="{{ m.map }}">{% endfor %}
<h2>Every image</h2><table><tr><th>image</th><th>kept</th><th>checked by</th>
<th>checker's value</th><th>checker's pool best</th><th>ensemble value</th></tr>
{% for row in rows %}<tr><td><a href="{{ row.image }}">{{ row.image }}</a></td>
<td>{{ row.kept }}</td><td>{{ row.checked_by }}</td><td>{{ "%.3f"|format(row.checker_value) }}</td>
<td>{{ "%.3f"|format(row.checker_pool_best) }}</td>
<td>{{ "%.3f"|format(row.ensemble_value) }}</td></tr>{% endfor %}</table>
<p>Predicted responses of the kept images (the subject's columns, lh then rh):
<a href="responses.npy">responses.npy</a>; every image:
<a href="synthesized.csv">synthesized.csv</a>; the query: <a href="query.json">query.json</a></p>
</body></html>"""


def save_image(path: Path, image: np.ndarray) -> None:
    """Write uint8 (H, W, 3) pixels as a PNG, atomically."""
    from PIL import Image

    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(image, mode="RGB").save(tmp, format="PNG")


def _montage(images: np.ndarray, titles: list[str], out: Path, label: str) -> None:
    import matplotlib.pyplot as plt

    from ..evaluation.plotting import save_png

    cols = min(len(images), 8)
    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols, 1.9 * rows + 0.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, title in zip(axes.ravel(), images, titles):
        ax.imshow(image)
        ax.set_title(title, fontsize=8)
    fig.suptitle(f"images made for {label}")
    fig.tight_layout()
    save_png(fig, out, dpi=110)
    plt.close(fig)


def _values(table: Any, out: Path, label: str) -> None:
    """Each image's checker value, and the checker's best pool value (a dash)."""
    import matplotlib.pyplot as plt

    from ..evaluation.plotting import save_png

    x = np.arange(len(table))
    colors = ["#4c72b0" if k else "#bbbbbb" for k in table.kept]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(table) + 2), 3.8))
    ax.bar(x, table.checker_value, color=colors, label="checker's prediction (grey: rejected)")
    if np.isfinite(table.checker_pool_best).any():
        ax.scatter(
            x, table.checker_pool_best, marker="_", s=400, color="#c44e52", label="pool's best"
        )
    ax.set_xticks(x, [name.split("/")[-1][:-4] for name in table.image])
    ax.set_ylabel(f"{label} (predicted)")
    ax.legend(frameon=False, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    fig.tight_layout()
    save_png(fig, out, dpi=110)
    plt.close(fig)


def _maps(work: Path, result: Any, members: Any, subject: str, names: list[str]) -> list[dict]:
    """The cortical map of each kept image's predicted response (minus the pool mean)."""
    import matplotlib.pyplot as plt

    from ..evaluation.plotting import plot_difference_map

    space = members.models[0].space
    values = result.responses[result.kept()].astype(np.float64)
    if result.pool_mean is not None:
        values = values - result.pool_mean
    limit = float(np.percentile(np.abs(values), 99)) if values.size else 1.0
    unit = " minus the pool's mean" if result.pool_mean is not None else ""
    (work / "maps").mkdir(exist_ok=True)
    maps = []
    for name, row in zip(names, values, strict=True):
        path = work / "maps" / Path(name).name
        fig = plot_difference_map(
            space,
            {subject: row},
            f"{subject}: predicted response to {name}",
            f"predicted response{unit}",
            output_file=path,
            limit=limit or 1.0,
        )
        plt.close(fig)
        maps.append({"image": name, "map": f"maps/{path.name}"})
    return maps


def write_page(work: Path, result: Any, members: Any, query: dict, table: Any) -> None:
    """montage.png, values.png, maps/*.png and index.html in ``work``.

    Parameters
    ----------
    work : Path
        The output folder being written.
    result : SynthesisResult
    members : Members
    query : dict
        What was asked (runs, subject, rois, n, pool, options).
    table : pandas.DataFrame
        One row per image (image, kept, checked_by, checker_value,
        checker_pool_best, ensemble_value).
    """
    rois = query["rois"]
    label = rois[0] if len(rois) == 1 else f"{rois[0]} - {rois[1]}"
    titles = [
        f"{'kept' if k else 'rejected'} {v:+.2f}" for k, v in zip(table.kept, table.checker_value)
    ]
    order = np.argsort(~table.kept.to_numpy(), kind="stable")
    _montage(result.images[order], [titles[i] for i in order], work / "montage.png", label)
    _values(table, work / "values.png", label)
    kept_names = list(table.image[table.kept])
    maps = _maps(work, result, members, query["subject"], kept_names)
    if query["pool"] is None:
        check = "No pool was given: no image was checked against natural images."
    elif len(members.models) == 1:
        check = (
            f"Kept: predicted above the best of the pool {query['pool']} by the one model, "
            "which also made it (give several runs for an independent check)."
        )
    else:
        check = (
            f"Each image was made by all members but one and kept only if that member "
            f"predicts it above its own best image of the pool {query['pool']}."
        )
    page = render_page(
        _PAGE,
        label=label,
        subject=query["subject"],
        runs=query["runs"],
        n_members=len(members.models),
        n=len(table),
        steps=query["options"]["steps"],
        n_kept=int(table.kept.sum()),
        check=check,
        maps=maps,
        map_note="The ensemble's predicted response"
        + (" minus its mean over the pool." if result.pool_mean is not None else "."),
        rows=table.to_dict("records"),
    )
    write_bytes_atomic(work / "index.html", page)
