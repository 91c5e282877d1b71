"""``brainencoder synthesize``: images made for a region, checked by models that did not make them.

Images that maximise the predicted mean response of an ROI (or the contrast
ROI A - ROI B) of one subject are found by gradient ascent through the whole
encoder, trunk and readout, down to the pixels (the trunk frozen, no feature
cache), on a parametrized image (:mod:`.synthesize_param`: a decorrelated
colour and Fourier parametrization, jitter, blur and total-variation priors),
from several starts. With an ensemble of ``M`` runs, start ``s`` is made by
every member but one (member ``s mod M``, held out) and checked by that one:
an image is kept only if the member that did not make it also predicts it
above the best natural image of the pool given (``--pool``), by that same
member's prediction. Optimising against models and keeping what another model
confirms is what separates an image that drives the region from one that
fools a network. With one run, the run both makes and checks each image (the
page says so).

Images are compared as every image is predicted: written as 8-bit PNGs at the
size of the models' training store and predicted again from those pixels.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.regions import roi_mask
from ..util.errors import DataError
from ..util.fileio import atomic_path, write_bytes_atomic
from ..util.ownership import build_owned, check_replaceable
from .explore import check_data_space
from .synthesize_param import AscentOptions, ascend
from .synthesize_pool import pool_scores, predict_all

__all__ = ["Members", "SynthesisResult", "load_members", "synthesize"]

logger = logging.getLogger(__name__)

#: the ownership kind of the output folder (an in-silico page folder, as explore's)
OWNER_KIND = "synthesize"


@dataclass
class Members:
    """The encoders of the runs given, flattened (an exported ensemble: each of its members).

    Attributes
    ----------
    models : list of Encoder
    labels : list of str
        Each member's run (and position in an exported ensemble).
    size : int
        Side of the images made: the members' training store's image size
        (else the largest input size).
    paths : list of (Path or None)
        Each member's model file, where its pool predictions are cached beside
        (None: not cached, e.g. a member of an exported ensemble).
    """

    models: list
    labels: list[str]
    size: int
    paths: list[Path | None] | None = None


@dataclass
class SynthesisResult:
    """What a synthesis found (before it is written).

    Attributes
    ----------
    images : ndarray of uint8, shape (n, size, size, 3)
    held_out : ndarray of int, shape (n,)
        The member that did not make each image and checks it.
    scores : ndarray of shape (n_members, n)
        Each member's predicted ROI value (mean of A, or A - B) of each image.
    pool_scores : ndarray of shape (n_members, n_pool) or None
    responses : ndarray of float32, shape (n, n_lh + n_rh)
        The ensemble's mean predicted response of each image, the subject's columns.
    pool_mean : ndarray of shape (n_lh + n_rh,) or None
        The ensemble's mean predicted response over the pool.
    """

    images: np.ndarray
    held_out: np.ndarray
    scores: np.ndarray
    pool_scores: np.ndarray | None
    responses: np.ndarray
    pool_mean: np.ndarray | None

    def kept(self) -> np.ndarray:
        """Whether each image's checking member predicts it above that member's pool best."""
        if self.pool_scores is None:
            return np.ones(len(self.images), dtype=bool)
        checked = self.scores[self.held_out, np.arange(len(self.images))]
        return checked > self.pool_scores.max(1)[self.held_out]


def load_members(runs: Sequence[str | Path]) -> Members:
    """The encoders of ``runs`` (run folders, model files, exported folders, ``hf:ORG/NAME``).

    Raises
    ------
    DataError
        A run that holds no encoder (a ridge model has no trunk to follow down to
        the pixels), or members of other subjects, vertex spaces or store sizes.
    """
    from ..models.encoder import Encoder
    from ..runs.ensemble import EnsembleModel
    from ..runs.load import load_model, model_file

    models, labels, paths = [], [], []
    for run in runs:
        model = load_model(run)
        path = model_file(run)
        inner = model.models if isinstance(model, EnsembleModel) else [model]
        for k, member in enumerate(inner):
            if not isinstance(member, Encoder):
                raise DataError(
                    f"{run}: holds a {type(member).__name__}, not an encoder: synthesize follows "
                    "the gradient through a trunk down to the pixels; give encoder runs"
                )
            models.append(member)
            labels.append(str(run) if len(inner) == 1 else f"{run}[{k + 1}]")
            paths.append(path if len(inner) == 1 else None)
    if len(models) > 1:
        EnsembleModel(models, name=f"ensemble({'+'.join(labels)})", labels=labels)  # the checks
    sizes = [getattr(m, "store_image_size", None) for m in models]
    size = sizes[0] if all(sizes) else max(m.input_size for m in models)
    for model in models:
        model.eval()
        model.requires_grad_(False)
    return Members(models, labels, int(size), paths)


def _roi_columns(space, subject: str, masks: Sequence[np.ndarray]) -> list[torch.Tensor]:
    """Group-space indices of each ROI's vertices of ``subject``."""
    columns = space.subject_columns(subject)
    return [torch.from_numpy(columns[m]) for m in masks]


def _value(model, x: torch.Tensor, subject: int, columns: list[torch.Tensor]) -> torch.Tensor:
    """A model's ROI value of images float (n, 3, S, S): mean over A (minus mean over B), (n,)."""
    index = torch.full((x.shape[0],), subject, dtype=torch.long)
    out = model(model.prepare_images(x), index)
    value = out[:, columns[0]].mean(1)
    return value - out[:, columns[1]].mean(1) if len(columns) == 2 else value


def _objective(members: Members, subject: str, columns, held_out: np.ndarray):
    """Each start's value: the mean over the members that make it (all but its checker)."""
    n_members = len(members.models)
    index = members.models[0].space.subject_index(subject)

    def objective(x: torch.Tensor) -> torch.Tensor:
        parts = torch.zeros(x.shape[0])
        for v in range(n_members):
            rows = torch.from_numpy(np.flatnonzero(held_out == v))
            if rows.numel() == 0:
                continue
            makers = [m for k, m in enumerate(members.models) if k != v] or members.models
            values = [_value(m, x[rows], index, columns) for m in makers]
            parts = parts.index_add(0, rows, torch.stack(values).mean(0))
        return parts

    return objective


def make_images(
    members: Members,
    subject: str,
    masks: Sequence[np.ndarray],
    n: int,
    options: AscentOptions,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images made by gradient ascent, and the member held out of each.

    Parameters
    ----------
    members : Members
    subject : str
    masks : sequence of 1 or 2 ndarray of bool, shape (n_lh + n_rh,)
        ROI A (and B) over the subject's columns.
    n : int
    options : AscentOptions

    Returns
    -------
    images : ndarray of uint8, shape (n, size, size, 3)
    held_out : ndarray of int, shape (n,)
    """
    space = members.models[0].space
    held_out = np.arange(n) % len(members.models)
    columns = _roi_columns(space, subject, masks)
    objective = _objective(members, subject, columns, held_out)
    made = ascend(objective, n, members.size, options)
    images = (made.permute(0, 2, 3, 1).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    return images, held_out


def _roi_data(run: str | Path, data: str | Path | None) -> tuple[str | Path, Path | None]:
    """The folder of the ROI label files (``data``, by default the first run's) and its store."""
    from ..data.store import Store
    from ..runs.exported import is_export
    from ..runs.hub import resolve_source
    from ..runs.run import Run

    if data is not None:
        return data, None
    path = resolve_source(run)
    if is_export(path):
        return path, None
    if not path.is_dir():
        raise DataError(
            f"{run}: a model file does not say where its ROI label files are; pass --data "
            "with the challenge-layout folder the model was trained on"
        )
    store_path = Run(path).store_path()
    return Store(store_path).manifest["source"]["root"], store_path


def synthesize(
    runs: Sequence[str | Path],
    subject: str,
    rois: Sequence[str],
    out: str | Path,
    n: int = 8,
    pool: str | Path | None = None,
    data: str | Path | None = None,
    options: AscentOptions | None = None,
) -> dict[str, Path]:
    """Make images for ROI A (or A - B) of ``subject``; write them and their page.

    Parameters
    ----------
    runs : sequence of path
        Encoder runs (run folders, model files, exported folders); several: an
        ensemble whose members check each other's images.
    subject : str
        A subject of the models.
    rois : sequence of 1 or 2 str
        ROI names of the challenge's mapping files; two: A - B.
    out : path
        Output folder (images/, rejected/, responses.npy, synthesized.csv,
        query.json, the figures and index.html), written aside and moved into
        place when complete; an existing folder is replaced only if it is
        empty or an earlier page folder (never files brainencoder did not write).
    n : int, default=8
        Images to make (starts).
    pool : path, optional
        Natural images (a folder, or a ``.npy`` / HDF5 array) whose best image
        each synthesized image must beat; default: no check.
    data : path, optional
        Challenge data root with the ROI label files (default: the first run's
        store's source).
    options : AscentOptions, optional

    Returns
    -------
    dict of str to Path
        ``page``, ``images`` (folder), ``responses``, ``table``.
    """
    from ..runs.exported import open_roi_layout
    from ..runs.load import read_files

    options, out = options or AscentOptions(), Path(out)
    if not runs:
        raise DataError("give at least one run to synthesize from")
    if not 1 <= len(rois) <= 2:
        raise DataError("give one ROI (--roi NAME) and optionally --against NAME for A - B")
    if n < 1 or options.steps < 1:
        raise DataError(f"--n and --steps must be >= 1; got {n} and {options.steps}")
    data, store_path = _roi_data(runs[0], data)
    inputs = [pool, data, store_path, *(f for r in runs for f in read_files(r))]
    check_replaceable(out, OWNER_KIND, inputs)  # before any work
    members = load_members(runs)
    space = members.models[0].space
    space.subject_index(subject)  # a subject of the models, before the data's
    layout = open_roi_layout(data, [subject])
    check_data_space(space, layout, [subject])
    masks = [roi_mask(layout[subject], r) for r in rois]
    pool_values, pool_mean = (None, None)
    if pool is not None:
        pool_values, pool_mean = pool_scores(members, pool, subject, masks)
    images, held_out = make_images(members, subject, masks, n, options)
    scores, responses = predict_all(members, images, subject, masks)
    result = SynthesisResult(images, held_out, scores, pool_values, responses, pool_mean)
    query = {
        "runs": [str(r) for r in runs],
        "subject": subject,
        "rois": list(rois),
        "n": n,
        "pool": None if pool is None else str(pool),
        "options": asdict(options),
    }
    with build_owned(out, OWNER_KIND, inputs) as work:  # moved into place when complete
        _write(work, result, members, query)
    return {
        "page": out / "index.html",
        "images": out / "images",
        "responses": out / "responses.npy",
        "table": out / "synthesized.csv",
    }


def _write(work: Path, result: SynthesisResult, members: Members, query: dict) -> None:
    """The images (kept and rejected), their responses, the table, the figures and the page."""
    import pandas as pd

    from .synthesize_page import save_image, write_page

    kept = result.kept()
    rows = []
    for i, image in enumerate(result.images):
        folder = "images" if kept[i] else "rejected"
        (work / folder).mkdir(exist_ok=True)
        name = f"{folder}/{i + 1:02d}.png"
        save_image(work / name, image)
        v = int(result.held_out[i])
        rows.append(
            {
                "image": name,
                "kept": bool(kept[i]),
                "checked_by": members.labels[v],
                "checker_value": float(result.scores[v, i]),
                "checker_pool_best": np.nan
                if result.pool_scores is None
                else float(result.pool_scores[v].max()),
                "ensemble_value": float(result.scores[:, i].mean()),
            }
        )
    table = pd.DataFrame(rows)
    with atomic_path(work / "synthesized.csv", suffix=".csv") as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(work / "responses.npy", suffix=".npy") as tmp:
        np.save(tmp, result.responses[kept])
    write_bytes_atomic(work / "query.json", json.dumps(query, indent=2).encode())
    write_page(work, result, members, query, table)
