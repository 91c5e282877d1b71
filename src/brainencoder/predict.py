"""Predictions for new images, challenge submissions, and ensembles.

A submission is a zip with ``subjXX/lh_pred_test.npy`` and
``subjXX/rh_pred_test.npy`` at its root for every subject: float32 arrays of
shape (n_test_images, n_vertices_hemi) in the subject's challenge space, rows
in sorted test-image order. It is validated before it is written, and written
atomically.
"""

from __future__ import annotations

import io
import itertools
import logging
import re
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from .data.layout import HEMIS, DatasetLayout
from .data.sources import IMAGE_SUFFIXES, ImageFiles, ImageSource, list_images
from .errors import DataError, UnsafeFileError
from .fileio import atomic_path

__all__ = [
    "IMAGE_SUFFIXES",
    "check_test_images",
    "ensemble_predict",
    "iter_predictions",
    "list_images",
    "predict_images",
    "predict_to_npy",
    "read_submission",
    "score_submission",
    "subject_test_scores",
    "write_submission",
]

logger = logging.getLogger(__name__)
_MEMBER = re.compile(r"^(subj\d+)/(lh|rh)_pred_test\.npy$")


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

    from .prefetch import available_cpus, prefetch

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

    Yields
    ------
    dict with keys "lh", "rh" : ndarray of float32, shape (batch, n_vertices_hemi)
    """
    items = range(len(source))
    batches = [items[s : s + batch_size] for s in range(0, len(items), batch_size)]
    for inputs in _model_inputs(models, batches, source.load, workers):
        total: dict[str, np.ndarray] = {}
        for m, model in enumerate(models):
            pred = model.predict(inputs[m], subject)
            n_lh = pred["lh"].shape[1]
            for h, sl in (("lh", slice(0, n_lh)), ("rh", slice(n_lh, None))):
                w = 1.0 / len(models) if weights is None else weights[m][sl][None, :]
                total[h] = total.get(h, 0.0) + pred[h] * w
        yield {h: np.asarray(total[h], dtype=np.float32) for h in HEMIS}


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
    progress : bool, optional
    workers : int, optional
        Threads decoding the images of the next batches while the models run
        (default: one per available CPU; 0: decode in this thread).

    Returns
    -------
    dict with keys "lh", "rh" : ndarray of float32, shape (n_images, n_vertices_hemi)
    """
    from tqdm.auto import tqdm

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

    from .fileio import check_free_space

    if len(images) == 0:
        raise DataError("no images to predict")
    paths = {h: Path(f"{stem}_{h}.npy") for h in HEMIS}
    batches = iter_predictions([model], images, subject, None, batch_size, workers)
    first = next(batches)
    n = len(images)
    width = {h: first[h].shape[1] for h in HEMIS}
    check_free_space(paths["lh"].parent, 4 * n * sum(width.values()), "the predictions")
    with contextlib.ExitStack() as stack:
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


def _expected_shapes(layout: DatasetLayout) -> dict[str, dict[str, tuple[int, int]]]:
    return {
        name: {h: (len(s.test_images), s.n_vertices(h)) for h in HEMIS}
        for name, s in layout.subjects.items()
    }


def _check_predictions(
    preds: Mapping[str, Mapping[str, np.ndarray]],
    expected: Mapping[str, Mapping[str, tuple[int, int]]],
) -> None:
    missing = sorted(set(expected) - set(preds))
    extra = sorted(set(preds) - set(expected))
    if missing or extra:
        raise DataError(
            f"submission subjects do not match the dataset: missing {missing}, unexpected {extra}"
        )
    for name, shapes in expected.items():
        for h in HEMIS:
            arr = preds[name].get(h)
            where = f"{name}/{h}_pred_test.npy"
            if arr is None:
                raise DataError(f"{where}: missing")
            if arr.dtype != np.float32:
                raise DataError(f"{where}: dtype {arr.dtype}, expected float32")
            if arr.shape != shapes[h]:
                raise DataError(
                    f"{where}: shape {arr.shape}, expected {shapes[h]} "
                    "(test images x challenge-space vertices)"
                )
            if not np.isfinite(arr).all():
                raise DataError(f"{where}: holds NaN or inf values")


def check_test_images(layout: DatasetLayout) -> None:
    """Raise if a subject has no test images (a submission needs every subject's)."""
    empty = [n for n, s in layout.subjects.items() if not s.test_images]
    if empty:
        raise DataError(
            f"subjects {empty} have no test images in {layout.root}; a submission "
            "needs them (restore test_split/test_images)"
        )


def write_submission(
    preds: Mapping[str, Mapping[str, np.ndarray]], layout: DatasetLayout, out: str | Path
) -> Path:
    """Validate predictions against the dataset and write the zip atomically.

    Parameters
    ----------
    preds : mapping of str to mapping of str to ndarray
        ``preds[subject][hemi]``, float32 (n_test, n_vertices_hemi).
    layout : DatasetLayout
        The challenge data (test image counts and vertex counts).
    out : path
    """
    check_test_images(layout)
    _check_predictions(preds, _expected_shapes(layout))
    out = Path(out)
    with atomic_path(out, suffix=".zip") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name in sorted(preds):
                for h in HEMIS:
                    buf = io.BytesIO()
                    np.save(buf, preds[name][h], allow_pickle=False)
                    zf.writestr(f"{name}/{h}_pred_test.npy", buf.getvalue())
    read_submission(out, layout)  # what was written reads back and validates
    return out


def read_submission(
    path: str | Path, layout: DatasetLayout | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """Read and validate a submission zip (no pickles; no member may leave the root).

    Parameters
    ----------
    path : path
    layout : DatasetLayout, optional
        If given, shapes are checked against it.
    """
    preds: dict[str, dict[str, np.ndarray]] = {}
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable zip file ({exc})") from None
    with zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            match = _MEMBER.match(info.filename)
            if match is None:
                raise UnsafeFileError(
                    f"{path}: unexpected member {info.filename!r}; a "
                    "submission holds only subjXX/{lh,rh}_pred_test.npy"
                )
            with zf.open(info) as fh:
                try:
                    arr = np.load(io.BytesIO(fh.read()), allow_pickle=False)
                except ValueError as exc:
                    raise DataError(f"{path}:{info.filename}: not a numeric .npy ({exc})") from None
            preds.setdefault(match.group(1), {})[match.group(2)] = arr
    if layout is not None:
        _check_predictions(preds, _expected_shapes(layout))
    return preds


def subject_test_scores(
    pred: Mapping[str, np.ndarray], truth_dir: str | Path, subject: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per-vertex challenge scores of one subject's test predictions.

    Parameters
    ----------
    pred : mapping of str to ndarray of shape (n_test, n_vertices_hemi)
        ``pred["lh"]``, ``pred["rh"]``.
    truth_dir : path
        ``subjXX/{lh,rh}_test_fmri.npy`` and ``{lh,rh}_noise_ceiling.npy``.
    subject : str

    Returns
    -------
    devkit, nc_positive : ndarray of shape (n_lh + n_rh,)
        The official devkit's per-vertex score, and the same with NaN where
        the noise ceiling is 0.
    """
    from .evaluate import load_noise_ceiling
    from .metrics import noise_normalized_score, pearson_r

    truth_dir = Path(truth_dir)
    scores, kept = [], []
    for h in HEMIS:
        target_path = truth_dir / subject / f"{h}_test_fmri.npy"
        try:
            target = np.load(target_path, allow_pickle=False)
        except FileNotFoundError:
            raise DataError(f"{target_path}: truth file not found") from None
        except ValueError as exc:
            raise DataError(f"{target_path}: cannot read ({exc})") from None
        if target.shape != pred[h].shape:
            raise DataError(
                f"{target_path}: shape {target.shape}, but the predictions of "
                f"{subject}/{h} are {pred[h].shape}"
            )
        nc = load_noise_ceiling(truth_dir, subject, h, target.shape[1])
        r = pearson_r(pred[h], target)
        scores.append(noise_normalized_score(r, nc))
        kept.append(noise_normalized_score(r, nc, "nc_positive"))
    return np.concatenate(scores), np.concatenate(kept)


def score_submission(
    path: str | Path, truth_dir: str | Path, layout: DatasetLayout | None = None
) -> dict[str, float]:
    """Challenge score of any submission zip against held-back responses.

    ``truth_dir/subjXX/{lh,rh}_test_fmri.npy`` (n_test, n_vertices_hemi) and
    ``{lh,rh}_noise_ceiling.npy`` (fractions; percentages are converted with a
    warning) are required, as written by ``brainencoder synth``. The score is
    the official devkit's (:func:`~brainencoder.metrics.noise_normalized_score`,
    rule "devkit"): mean over every vertex of every subject.

    Returns
    -------
    dict
        Mean score per subject and ``"all"`` (the leaderboard's number),
        ``"median"``, and ``"all_nc_positive"``: the mean over vertices with
        NC > 0 only, a clearly different figure on data with NC = 0 vertices.
    """
    preds = read_submission(path, layout)
    per_subject, every, positive = {}, [], []
    for name in sorted(preds):
        devkit, kept = subject_test_scores(preds[name], truth_dir, name)
        per_subject[name] = float(devkit.mean())
        every.append(devkit)
        positive.append(kept)
    allv, pos = np.concatenate(every), np.concatenate(positive)
    return {
        **per_subject,
        "all": float(allv.mean()),
        "median": float(np.median(allv)),
        "all_nc_positive": float(np.nanmean(pos)) if np.isfinite(pos).any() else float("nan"),
    }
