"""``brainencoder explore``: in-silico experiments with a trained encoder.

Which images drive a region most? Every image of a folder or of an image
array file (NSD's 73,000 stimuli in ``nsd_stimuli.hdf5``) is predicted once
(batched, written batch by batch into a memory-mapped cache beside the run,
so memory does not grow with the number of images and another query over
the same images is instant), images are ranked by the mean predicted response
in an ROI (names from the challenge's label files, resolved per subject), or
by the contrast ROI1 - ROI2, and the page shows the ranking, a montage of the
top and bottom images, a histogram, and the cortical map of the mean
predicted response to the top images minus the mean over all images.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.regions import roi_mask
from ..core.space import GroupSpace
from ..data.layout import HEMIS
from ..data.sources import ImageSource, open_images
from ..util.errors import DataError
from ..util.fileio import atomic_path, check_free_space, write_bytes_atomic
from ..util.html import render_page
from ..util.ownership import build_owned, check_replaceable

__all__ = ["ArrayRows", "check_data_space", "explore"]

logger = logging.getLogger(__name__)


def _cache_key(model_path: Path, source: ImageSource, subject: str) -> str:
    digest = hashlib.sha256(f"{source.key()}|{subject}".encode())
    st = model_path.stat()
    digest.update(f"{model_path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def _fill(out: np.ndarray, model, source: ImageSource, subject: str) -> np.ndarray:
    """Write the predictions of every image into ``out`` (n_images, n_lh + n_rh), batch by batch."""
    from ..inference.images import iter_predictions

    start = 0
    for pred in iter_predictions([model], source, subject):
        block = np.concatenate([pred[h] for h in HEMIS], 1)
        out[start : start + block.shape[0]] = block
        start += block.shape[0]
    return out


def _predictions(model, model_path: Path, source: ImageSource, subject: str) -> np.ndarray:
    """(n_images, n_lh + n_rh) predictions, cached beside the run (memory-mapped).

    They are written batch by batch into the cache file, so memory does not
    grow with the number of images; an unwritable run folder keeps them in
    memory instead (with a warning).
    """
    cache_dir = model_path.parent / "cache" / "explore"
    cache = cache_dir / f"{_cache_key(model_path, source, subject)}.npy"
    shape = (len(source), sum(model.space.n_subject_vertices(subject, h) for h in HEMIS))
    if cache.is_file():
        try:
            values = np.load(cache, mmap_mode="r", allow_pickle=False)
            if values.shape == shape and values.dtype == np.float32:
                return values
        except (OSError, ValueError):
            pass
        logger.warning("%s: unreadable prediction cache; predicting again", cache)
    # a memory map on a full disk would end the process (SIGBUS), not raise
    check_free_space(cache_dir.parent, 4 * shape[0] * shape[1], "the explore prediction cache")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache, suffix=".npy") as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
            _fill(out, model, source, subject).flush()
            del out
        return np.load(cache, mmap_mode="r", allow_pickle=False)
    except OSError as exc:
        logger.warning("cannot cache predictions in %s (%s)", cache_dir, exc.strerror or exc)
    return _fill(np.empty(shape, np.float32), model, source, subject)


def _roi_scores(values: np.ndarray, masks: Sequence[np.ndarray], rows: int = 4096) -> tuple:
    """Per image: mean over ROI 1 (minus ROI 2); and the mean prediction over images.

    Read ``rows`` images at a time, so a memory-mapped cache of any size fits.

    Returns
    -------
    score : ndarray of shape (n_images,)
    mean : ndarray of shape (n_columns,)
    """
    score = np.empty(values.shape[0])
    total = np.zeros(values.shape[1])
    for start in range(0, values.shape[0], rows):
        block = np.asarray(values[start : start + rows], dtype=np.float64)
        part = block[:, masks[0]].mean(1)
        if len(masks) == 2:
            part = part - block[:, masks[1]].mean(1)
        score[start : start + rows] = part
        total += block.sum(0)
    return score, total / values.shape[0]


def _montage(source: ImageSource, values, order, top: int, out: Path, label: str) -> Path:
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


def _histogram(values, threshold: float, out: Path, label: str) -> Path:
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


_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8">
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
<h2>Ranking</h2><table><tr><th>rank</th><th>image</th><th>value</th></tr>
{% for row in rows %}<tr><td>{{ row.rank }}</td><td>{{ row.image }}</td>
<td>{{ "%.3f"|format(row.value) }}</td></tr>{% endfor %}</table>
<p>Full ranking: <a href="ranking.csv">ranking.csv</a></p>
</body></html>"""


@dataclass(frozen=True)
class ArrayRows:
    """Which images of an image array file :func:`explore` ranks (``--dataset``, ``--rows``)."""

    dataset: str | None = None  # HDF5 dataset (default: the file's only image dataset)
    rows: slice | None = None  # rows to rank (default: all)


def explore(
    run: str | Path,
    images: str | Path,
    subject: str,
    rois: Sequence[str],
    out: str | Path,
    top: int = 8,
    data: str | Path | None = None,
    array: ArrayRows | None = None,
) -> dict[str, Path]:
    """Rank images by predicted ROI response (or ROI1 - ROI2) and write the page.

    Parameters
    ----------
    run : path
        Run folder, model file or exported folder (or ``hf:ORG/NAME``).
    images : path
        Folder of images (any size and mode; see :func:`~brainencoder.data.images.load_image`),
        or uint8 images in a ``.npy`` or HDF5 file (NSD's ``nsd_stimuli.hdf5``;
        see :func:`~brainencoder.data.sources.open_images`).
    subject : str
        A subject of the model, or ``"all"`` (mean over the subjects).
    rois : sequence of 1 or 2 str
        ROI names as in the challenge's mapping files (``FFA-1``, ``PPA``...).
    out : path
        Output folder (ranking.csv, montage.png, histogram.png, map.png, index.html,
        query.json). It may not be, hold or lie inside an input (the images, the
        data, the store) nor hold the run or the current folder; an existing
        folder is replaced only if it is empty or an earlier ``explore`` output
        (never files it did not write). It is written aside and moved into
        place when complete.
    top : int, default=8
    data : path, optional
        Challenge data root with the ROI label files (default: the run's store's
        source; an exported folder's own); each subject's vertices there must be
        the model's.
    array : ArrayRows, optional
        The HDF5 dataset and rows of an image array file (default: all its images).

    Returns
    -------
    dict of str to Path
    """
    import pandas as pd

    from ..runs.exported import open_roi_layout
    from ..runs.hub import resolve_source
    from ..runs.load import load_model, model_file, read_files

    array = array or ArrayRows()
    run, out = resolve_source(run), Path(out)  # hf:ORG/NAME: its cached folder
    if not 1 <= len(rois) <= 2:
        raise DataError("give one ROI (--roi NAME) or two for a contrast (--roi A --roi B)")
    if top < 1:
        raise DataError(f"--top must be >= 1; got {top}")
    model_path = model_file(run)
    model = load_model(run)  # an exported ensemble: every member
    data, store_path = _roi_data(run, data)
    inputs = [images, data, store_path, *read_files(run)]
    check_replaceable(out, "explore", inputs)  # before any work
    subjects = list(model.space.subjects) if subject == "all" else [subject]
    model.space.subject_index(subjects[0])
    layout = open_roi_layout(data, [s for s in subjects])
    check_data_space(model.space, layout, subjects)
    label = rois[0] if len(rois) == 1 else f"{rois[0]} - {rois[1]}"
    with open_images(images, array.dataset, array.rows) as source:
        score, diffs = _scores(model, model_path, source, layout, subjects, rois)
        order = np.argsort(-score, kind="stable")
        k = min(top, len(source))
        diffs = {n: v[np.sort(order[:k])].mean(0) - mean for n, (v, mean) in diffs.items()}
        names = source.names
        ranking = pd.DataFrame(
            {
                "rank": np.arange(1, len(source) + 1),
                "image": [names[i] for i in order],
                "value": score[order],
            }
        )
        query = {
            "run": str(run),
            "images": str(images),
            "dataset": array.dataset,
            "rows": None if array.rows is None else [array.rows.start, array.rows.stop],
            "subject": subject,
            "rois": list(rois),
            "top": k,
        }
        with build_owned(out, "explore", inputs) as work:  # moved into place when complete
            with atomic_path(work / "ranking.csv", suffix=".csv") as tmp:
                ranking.to_csv(tmp, index=False)
            _montage(source, score, order, k, work / "montage.png", label)
            _histogram(score, score[order[k - 1]], work / "histogram.png", label)
            _cortex_map(model.space, subjects, diffs, work / "map.png", subject, k, label)
            page = render_page(
                _PAGE,
                label=label,
                run=str(run),
                subject=subject,
                n_images=len(source),
                images=str(images),
                top=k,
                montage="montage.png",
                histogram="histogram.png",
                map="map.png",
                rows=ranking.head(max(2 * k, 20)).to_dict("records"),
            )
            write_bytes_atomic(work / "index.html", page)
            write_bytes_atomic(work / "query.json", json.dumps(query, indent=2).encode())
    return {
        "page": out / "index.html",
        "ranking": out / "ranking.csv",
        "montage": out / "montage.png",
        "histogram": out / "histogram.png",
        "map": out / "map.png",
    }


def _roi_data(run: Path, data: str | Path | None) -> tuple[str | Path, Path | None]:
    """The folder of the ROI label files (``data``, by default the run's) and the store read."""
    from ..data.store import Store
    from ..runs.exported import is_export
    from ..runs.run import Run

    if data is not None:
        return data, None
    if is_export(run):
        return run, None  # an exported folder holds its subjects' ROI files
    store_path = Run(run).store_path()
    return Store(store_path).manifest["source"]["root"], store_path


def _scores(model, model_path: Path, source: ImageSource, layout, subjects, rois) -> tuple:
    """Each image's score (the mean over ``subjects``); each subject's (predictions, mean)."""
    per_subject, predictions = [], {}
    for name in subjects:
        masks = [roi_mask(layout[name], r) for r in rois]
        values = _predictions(model, model_path, source, name)
        score, mean = _roi_scores(values, masks)
        per_subject.append(score)
        predictions[name] = (values, mean)
    return np.mean(per_subject, axis=0), predictions


_DATA_SPACE = (
    "{path}: {subject}'s vertices in this dataset are not those of the model's {subject}, "
    "so its ROI labels would rank the wrong vertices: {diff}; pass --data with the dataset "
    "the model was trained on"
)


def check_data_space(
    space: GroupSpace, layout: Any, subjects: Sequence[str], message: str = _DATA_SPACE
) -> None:
    """Raise unless each subject's vertices in ``layout`` are the model's for that subject.

    The ROI label files of another dataset with the same vertex count would
    otherwise pick the wrong columns of the model's predictions.

    Parameters
    ----------
    space : GroupSpace
        The model's vertex space.
    layout : DatasetLayout
        The data whose ROI label files will be read.
    subjects : sequence of str
        Subjects of ``space`` to check.
    message : str, optional
        The error, a :meth:`str.format` template of ``path`` (the mask file),
        ``subject``, ``hemi`` and ``diff`` (:meth:`GroupSpace.vertex_difference`:
        which fsaverage vertices only one side has).

    Raises
    ------
    DataError
        Naming the mask file that differs and the vertices that differ.
    """
    for name in subjects:
        for hemi in HEMIS:
            diff = space.vertex_difference(name, hemi, layout[name].masks[hemi])
            if diff is not None:
                path = layout[name].roi_dir / f"{hemi}.all-vertices_fsaverage_space.npy"
                raise DataError(message.format(path=path, subject=name, hemi=hemi, diff=diff))


def _cortex_map(
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
