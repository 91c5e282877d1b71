"""Predictions for new images: from files or image arrays, one model or an ensemble.

Images come from :mod:`brainencoder.data.sources` (a folder, or a ``.npy`` /
HDF5 array); every image is resized as in training and decoded in threads
while the model runs; predictions come batch by batch from
:func:`iter_predictions`, the one prediction over images, collected in memory
(:func:`predict_images`, :func:`ensemble_predict`) or streamed into ``.npy``
files (:func:`predict_to_npy`). Several models are averaged by
:func:`average_predictions`, the one ensemble average (``EnsembleModel`` too).
Predictions over a store's rows: :mod:`brainencoder.inference.store`.
Challenge submissions: :mod:`brainencoder.evaluation.submission`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from ..data.layout import HEMIS
from ..data.sources import IMAGE_SUFFIXES, ImageFiles, ImageSource, list_images
from ..util.errors import ConfigError, DataError
from ..util.fileio import atomic_path

__all__ = [
    "IMAGE_SUFFIXES",
    "average_predictions",
    "check_batch_size",
    "ensemble_predict",
    "iter_predictions",
    "list_images",
    "predict_images",
    "predict_to_npy",
]


def check_batch_size(batch_size: object) -> int:
    """``batch_size`` if it is a positive integer (Python or numpy), else a one-line error.

    Parameters
    ----------
    batch_size : object
        Images per batch, as the caller gave it.

    Returns
    -------
    int

    Raises
    ------
    ConfigError
        For 0, a negative number, a bool, a float or anything else, before any
        image is read.
    """
    integer = isinstance(batch_size, int | np.integer) and not isinstance(batch_size, bool)
    if not integer or batch_size < 1:  # type: ignore[operator]
        raise ConfigError(
            f"'batch_size' must be a positive integer; got {batch_size!r}: "
            "pass the number of images per batch (1 or more)"
        )
    return int(batch_size)  # type: ignore[call-overload]


def average_predictions(
    preds: Sequence[dict[str, np.ndarray]], weights: Sequence[np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """The mean of several models' predictions of one subject, per vertex weighted or not.

    Parameters
    ----------
    preds : sequence of dict with keys "lh", "rh"
        One per model: ndarray of float32, shape (n_images, n_vertices_hemi).
    weights : sequence of ndarray of shape (n_lh + n_rh,), optional
        One per model, lh then rh columns, summing to 1 over models at each
        vertex. Default: equal weights, ``1 / len(preds)`` (the plain mean).

    Returns
    -------
    dict with keys "lh", "rh" : ndarray of float32, shape (n_images, n_vertices_hemi)
        ``sum_m preds[m] * weights[m]``, accumulated over models in order.
    """
    n_lh = preds[0]["lh"].shape[1]
    total: dict[str, np.ndarray] = {}
    for m, pred in enumerate(preds):
        for h, sl in (("lh", slice(0, n_lh)), ("rh", slice(n_lh, None))):
            w = 1.0 / len(preds) if weights is None else weights[m][sl][None, :]
            total[h] = total.get(h, 0.0) + pred[h] * w
    return {h: np.asarray(total[h], dtype=np.float32) for h in HEMIS}


def _ready(model, images: np.ndarray):
    """A CPU encoder's input batch, resized before it is needed; else the uint8 array."""
    prepare = getattr(model, "prepare_images", None)
    if prepare is None or next(model.parameters()).device.type != "cpu":
        return images  # ridge models take arrays; a GPU resizes on the device
    return prepare(images)


def _decode_size(model: object) -> int:
    """The size images are decoded at for ``model``: its training store's, else its input."""
    size = getattr(model, "store_image_size", None) or getattr(model, "input_size", None)
    if size is None:
        raise DataError("this model records neither its store image size nor its input size")
    return int(size)


def _model_inputs(
    models: Sequence, batches: Sequence[Sequence], load: Callable, workers: int | None
) -> Iterator[list]:
    """Every model's input for each batch of images, prepared ahead in threads.

    ``load(item, size)`` returns one image as uint8 (size, size, 3). Each image
    is loaded once per distinct store size of the models and is its own
    thread task, so all ``workers`` threads share a batch; the next two
    batches are being prepared while the caller runs the models on this one.
    """
    from concurrent.futures import ThreadPoolExecutor

    from ..util.prefetch import available_cpus, prefetch

    sizes = [_decode_size(m) for m in models]
    distinct = sorted(set(sizes))
    workers = available_cpus() if workers is None else workers

    def decode(item) -> dict[int, np.ndarray]:
        return {size: load(item, size) for size in distinct}

    with ThreadPoolExecutor(max(workers, 1)) as pool:

        def prepare(batch: Sequence) -> list:
            decoded = list(pool.map(decode, batch)) if workers else [decode(p) for p in batch]
            arrays = {size: np.stack([d[size] for d in decoded]) for size in distinct}
            return [_ready(m, arrays[size]) for m, size in zip(models, sizes)]

        yield from prefetch(prepare, batches, 2 if workers else 0)


def iter_predictions(
    models: Sequence,
    source: ImageSource,
    subject: str,
    weights: Sequence[np.ndarray] | None = None,
    batch_size: int = 64,
    workers: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Predictions batch by batch: the (weighted) mean of ``models``, in image order.

    Memory stays at a few batches whatever the number of images (all of NSD's
    73,000 stimuli, say); :func:`ensemble_predict` collects them.

    Parameters
    ----------
    models : sequence of models
        Each with ``predict(images, subject)``; one model is its own mean.
    source : ImageSource
        The images, each decoded once per distinct store image size of the models.
    subject : str
    weights : sequence of ndarray of shape (n_lh + n_rh,), optional
        Per-model, per-vertex weights (:func:`average_predictions`).
    batch_size : int, default=64
    workers : int, optional
        Threads decoding the next batches (default: one per available CPU).

    Yields
    ------
    dict with keys "lh", "rh" : ndarray of float32, shape (batch, n_vertices_hemi)

    Raises
    ------
    ConfigError
        If ``batch_size`` is not a positive integer (:func:`check_batch_size`).
    """
    batch_size = check_batch_size(batch_size)
    items = range(len(source))
    batches = [items[s : s + batch_size] for s in range(0, len(items), batch_size)]
    for inputs in _model_inputs(models, batches, source.load, workers):
        preds = [model.predict(x, subject) for model, x in zip(models, inputs)]
        yield average_predictions(preds, weights)


def predict_images(
    model,
    images: Sequence[Path] | ImageSource,
    subject: str,
    batch_size: int = 64,
    progress: bool | None = None,
    workers: int | None = None,
) -> dict[str, np.ndarray]:
    """Predict a subject's responses to image files (any size, RGB/grayscale/RGBA).

    ``images`` are paths, or an image source of
    :mod:`brainencoder.data.sources` (e.g. an HDF5 array of uint8 images).
    Each image is decoded and resized to the size of the store the model was
    trained on (if known, else straight to the model's input size), then to
    the model's input size, as in training.

    Returns
    -------
    dict with keys "lh", "rh" : ndarray of float32, shape (n_images, n_vertices_hemi)
    """
    return ensemble_predict([model], images, subject, None, batch_size, progress, workers)


def ensemble_predict(
    models: Sequence,
    images: Sequence[Path] | ImageSource,
    subject: str,
    weights: Sequence[np.ndarray] | None = None,
    batch_size: int = 64,
    progress: bool | None = None,
    workers: int | None = None,
) -> dict[str, np.ndarray]:
    """Mean (or per-vertex weighted mean) of several models' predictions.

    Each batch of images is decoded once per distinct store image size of the
    models, not once per model.

    Parameters
    ----------
    models : sequence of models
    images : sequence of image paths, or an image source (ImageFiles, ImageArray)
    subject : str
    weights : sequence of ndarray of shape (n_lh + n_rh,), optional
        Per-model, per-vertex weights (lh then rh columns), summing to 1 over
        models at each vertex. Default: the plain mean.
    batch_size : int, default=64
        Images per batch (a positive integer; else ConfigError, before any work).
    progress : bool, optional
    workers : int, optional
        Threads decoding the images of the next batches while the models run
        (default: one per available CPU; 0: decode in this thread).

    Returns
    -------
    dict with keys "lh", "rh" : ndarray of float32, shape (n_images, n_vertices_hemi)
    """
    from tqdm.auto import tqdm

    batch_size = check_batch_size(batch_size)
    source = images if isinstance(images, ImageSource) else ImageFiles(images)
    if len(source) == 0:
        raise DataError("no images to predict")
    outs: dict[str, list[np.ndarray]] = {h: [] for h in HEMIS}
    n_batches = -(-len(source) // batch_size)
    for pred in tqdm(
        iter_predictions(models, source, subject, weights, batch_size, workers),
        total=n_batches,
        desc=f"predict {subject}",
        unit="batch",
        disable=None if progress is None else not progress,
    ):
        for h in HEMIS:
            outs[h].append(pred[h])
    return {h: np.concatenate(v) for h, v in outs.items()}


def predict_to_npy(
    model,
    images: ImageSource,
    subject: str,
    stem: str | Path,
    batch_size: int = 64,
    progress: bool | None = None,
    workers: int | None = None,
) -> dict[str, Path]:
    """Write ``{stem}_lh.npy`` and ``{stem}_rh.npy`` batch by batch (memory-mapped).

    Memory does not grow with the number of images, so all of NSD's 73,000
    stimuli can be predicted at once; the disk is checked first (a full disk
    under a memory map would end the process), and both files appear only
    when every prediction is written.

    Returns
    -------
    dict with keys "lh", "rh" : Path
        Files of float32, shape (n_images, n_vertices_hemi).
    """
    import contextlib

    from tqdm.auto import tqdm

    from ..util.fileio import check_free_space

    batch_size = check_batch_size(batch_size)
    if len(images) == 0:
        raise DataError("no images to predict")
    paths = {h: Path(f"{stem}_{h}.npy") for h in HEMIS}
    n = len(images)
    with contextlib.ExitStack() as stack:  # an error stops the decoding threads too
        batches = stack.enter_context(
            contextlib.closing(
                iter_predictions([model], images, subject, None, batch_size, workers)
            )
        )
        first = next(batches)
        width = {h: first[h].shape[1] for h in HEMIS}
        check_free_space(paths["lh"].parent, 4 * n * sum(width.values()), "the predictions")
        tmps = {h: stack.enter_context(atomic_path(paths[h], suffix=".npy")) for h in HEMIS}
        outs = {
            h: np.lib.format.open_memmap(tmps[h], "w+", np.float32, (n, width[h])) for h in HEMIS
        }
        start = 0
        for pred in tqdm(
            itertools.chain([first], batches),
            total=-(-n // batch_size),
            desc=f"predict {subject}",
            unit="batch",
            disable=None if progress is None else not progress,
        ):
            stop = start + pred["lh"].shape[0]
            for h in HEMIS:
                outs[h][start:stop] = pred[h]
            start = stop
        for out in outs.values():
            out.flush()
        del outs, out
    return paths
