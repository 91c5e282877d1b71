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
from .explore_intervals import Ensemble, ensemble_scores, separability
from .explore_page import PAGE, histogram, interval_chart, montage
from .explore_page import cortex_map as _cortex_map

__all__ = ["ArrayRows", "Ensemble", "check_data_space", "explore"]

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


@dataclass(frozen=True)
class ArrayRows:
    """Which images of an image array file :func:`explore` ranks (``--dataset``, ``--rows``)."""

    dataset: str | None = None  # HDF5 dataset (default: the file's only image dataset)
    rows: slice | None = None  # rows to rank (default: all)


def explore(
    run: str | Path | Ensemble,
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
    run : path or Ensemble
        Run folder, model file or exported folder (or ``hf:ORG/NAME``); an
        :class:`~brainencoder.experiments.explore_intervals.Ensemble` of several:
        ranked by their mean prediction, and with its ``interval`` each image's
        calibrated interval for the ROI score (ranking.csv ``lower``, ``upper``,
        ``separable`` from the next rank; the page says which top ranks are
        separable from the rest).
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
        query.json; with an interval also intervals.png). It may not be, hold or lie
        inside an input (the images, the data, the store) nor hold the run or the
        current folder; an existing folder is replaced only if it is empty or an earlier
        ``explore`` output (never files it did not write). It is written aside and moved
        into place when complete.
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
    from ..runs.exported import open_roi_layout

    array = array or ArrayRows()
    ensemble = run if isinstance(run, Ensemble) else Ensemble([run])
    out = Path(out)
    if not 1 <= len(rois) <= 2:
        raise DataError("give one ROI (--roi NAME) or two for a contrast (--roi A --roi B)")
    if top < 1:
        raise DataError(f"--top must be >= 1; got {top}")
    paths, models, inputs = _members(ensemble)
    run, model = paths[0], models[0]
    data, store_path = _roi_data(run, data)
    inputs = [images, data, store_path, *inputs]
    check_replaceable(out, "explore", inputs)  # before any work
    calibrated = _calibration(ensemble, paths)
    subjects = list(model.space.subjects) if subject == "all" else [subject]
    model.space.subject_index(subjects[0])
    layout = open_roi_layout(data, [s for s in subjects])
    check_data_space(model.space, layout, subjects)
    query = {
        "run": str(run),
        "images": str(images),
        "dataset": array.dataset,
        "rows": None if array.rows is None else [array.rows.start, array.rows.stop],
        "subject": subject,
        "rois": list(rois),
        "top": top,
    }
    if len(paths) > 1:
        query.update(ensemble=[str(p) for p in paths], interval=ensemble.interval)
    with open_images(images, array.dataset, array.rows) as source:
        ranked = _scores((models, paths), source, layout, subjects, rois, calibrated)
        with build_owned(out, "explore", inputs) as work:  # moved into place when complete
            _write(work, source, ranked, model.space, query)
    return {
        "page": out / "index.html",
        "ranking": out / "ranking.csv",
        "montage": out / "montage.png",
        "histogram": out / "histogram.png",
        "map": out / "map.png",
        **({} if calibrated is None else {"intervals": out / "intervals.png"}),
    }


def _members(ensemble: Ensemble) -> tuple[list[Path], list, list[Path]]:
    """The runs' paths, models (of one vertex space) and the files they are read from."""
    from ..runs.hub import resolve_source
    from ..runs.load import load_model, read_files

    paths = [resolve_source(r) for r in ensemble.runs]  # hf:ORG/NAME: its cached folder
    models = [load_model(p) for p in paths]  # an exported ensemble: every member
    for p, m in zip(paths[1:], models[1:], strict=True):
        if not m.space.same_as(models[0].space):
            raise DataError(f"{p}: other subjects or vertices than {paths[0]}; rank one model")
    return paths, models, [f for p in paths for f in read_files(p)]


def _calibration(ensemble: Ensemble, paths: list[Path]):
    """The checked calibration of the runs (None without an interval)."""
    from ..inference.conformal import conformal_rank
    from ..runs.calibration import default_calibration_path, read_calibration

    if ensemble.interval is None:
        return None
    conformal_rank(10**9, ensemble.interval)  # the level is a number in (0, 1)
    path = Path(ensemble.calibration or default_calibration_path(paths))
    cal = read_calibration(path)
    cal.check_members(paths, path)
    return cal, ensemble.interval


def _write(work: Path, source: ImageSource, ranked: dict, space: GroupSpace, query: dict) -> None:
    """The ranking, the figures, the page and the query, into ``work``."""
    import pandas as pd

    score, order, subjects = ranked["score"], ranked["order"], list(ranked["diffs"])
    k, rois, level = min(query["top"], len(source)), query["rois"], ranked["level"]
    query["top"] = k
    label = rois[0] if len(rois) == 1 else f"{rois[0]} - {rois[1]}"
    table = {"rank": np.arange(1, len(source) + 1), "image": [source.names[i] for i in order]}
    table["value"] = score[order]
    text = ""
    if level is not None:
        table["lower"], table["upper"] = ranked["lower"][order], ranked["upper"][order]
        sep, text = separability(ranked["lower"], ranked["upper"], order, k, level)
        table["separable"] = sep
    ranking = pd.DataFrame(table)
    top = np.sort(order[:k])
    diffs = {n: v[top].mean(0) - mean for n, (v, mean) in ranked["diffs"].items()}
    with atomic_path(work / "ranking.csv", suffix=".csv") as tmp:
        ranking.to_csv(tmp, index=False)
    montage(source, score, order, k, work / "montage.png", label)
    histogram(score, score[order[k - 1]], work / "histogram.png", label)
    _cortex_map(space, subjects, diffs, work / "map.png", query["subject"], k, label)
    shown = max(2 * k, 20)  # the ranks the page lists (and charts with their intervals)
    if level is not None:
        interval_chart(ranking, shown, k, work / "intervals.png", label, level)
    page = render_page(
        PAGE,
        label=label,
        run=query["run"]
        + (f" (+{len(query['ensemble']) - 1} runs)" if "ensemble" in query else ""),
        subject=query["subject"],
        n_images=len(source),
        images=query["images"],
        top=k,
        montage="montage.png",
        histogram="histogram.png",
        map="map.png",
        rows=ranking.head(shown).to_dict("records"),
        level=None if level is None else f"{100 * level:g}%",
        separability=text,
        intervals=None if level is None else "intervals.png",
    )
    write_bytes_atomic(work / "index.html", page)
    write_bytes_atomic(work / "query.json", json.dumps(query, indent=2).encode())


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


def _scores(members: tuple, source: ImageSource, layout, subjects, rois, calibrated) -> dict:
    """Each image's score (the mean over ``subjects``), its order and interval; the map's parts.

    ``members`` is (models, model paths); ``calibrated`` (Calibration, level) or None.
    Returns a dict: ``score``, ``order``, ``lower`` and ``upper`` (None without
    an interval), ``level``, and ``diffs``: per subject (the members' mean
    predictions, the mean over images) for the cortical map.
    """
    from ..runs.load import model_file

    models, paths = members
    per_subject, lows, highs, diffs = [], [], [], {}
    for name in subjects:
        masks = [roi_mask(layout[name], r) for r in rois]
        values = [_predictions(m, model_file(p), source, name) for m, p in zip(models, paths)]
        if len(values) == 1 and calibrated is None:
            score, mean = _roi_scores(values[0], masks)
            lower = upper = None
        else:
            extra = None if calibrated is None else (calibrated[0], name, calibrated[1])
            score, mean, lower, upper = ensemble_scores(values, masks, extra)
        per_subject.append(score)
        lows.append(lower)
        highs.append(upper)
        diffs[name] = (_MemberMean(values), mean)
    score = np.mean(per_subject, axis=0)
    return {
        "score": score,
        "order": np.argsort(-score, kind="stable"),
        "lower": None if calibrated is None else np.mean(lows, axis=0),
        "upper": None if calibrated is None else np.mean(highs, axis=0),
        "level": None if calibrated is None else calibrated[1],
        "diffs": diffs,
    }


class _MemberMean:
    """Rows of the members' mean prediction: ``obj[rows]`` (n_rows, n_columns)."""

    def __init__(self, values: list[np.ndarray]) -> None:
        self.values = values

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        return np.mean([np.asarray(v[rows], dtype=np.float64) for v in self.values], axis=0)


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
