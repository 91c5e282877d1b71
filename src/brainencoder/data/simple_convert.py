"""Write a simple-layout experiment in the challenge layout, with its noise ceilings.

``prepare`` turns your own experiment (:mod:`.simple_layout`) into the
Algonauts 2023 layout inside the store (``STORE/source/subjXX/...``), so that
every command reads it as it reads the challenge's data:

* images are copied byte for byte under the challenge's names
  (``train-0001_nsd-00013.png``, the number being the image id; Pillow reads a
  file by its content, so a JPEG stays a JPEG), or, from an image array,
  written as PNG;
* the trials of each image are averaged (``training_fmri``), columns sorted
  by fsaverage vertex; the vertex indices become the ``all-vertices`` masks;
* ROI labels and their JSON mappings become the challenge's label files;
* the test images' averaged responses go to ``STORE/truth/subjXX/{lh,rh}_test_fmri.npy``
  and, from the repeated trials, the noise ceilings
  (:mod:`brainencoder.core.noise_ceiling`) to
  ``STORE/truth/subjXX/{lh,rh}_noise_ceiling.npy`` (for the test images' trial
  counts) and ``STORE/truth/train/subjXX/`` (for the training images'),
  with ``{lh,rh}_ncsnr.npy``: the folders ``evaluate --noise-ceiling`` reads.

Every file is written atomically; a subject is marked done (``.converted``)
when all its files are there, so a killed ``prepare`` redoes only the rest.
"""

from __future__ import annotations

import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..core.noise_ceiling import (
    SessionMoments,
    ncsnr_from_noise_variance,
    noise_ceiling,
    within_image_variance,
    zscore_sessions,
)
from ..core.space import HEMIS
from ..util.errors import BrainEncoderError, DataError
from ..util.fileio import atomic_path, save_mapping, save_npy_atomic
from .simple_checks import open_array, read_roi_mapping
from .simple_layout import SimpleLayout, SimpleSubject
from .sources import ImageArray

__all__ = [
    "conversion_bytes",
    "convert_simple",
    "original_names",
    "resolve_noise_ceiling",
    "source_files",
]

logger = logging.getLogger(__name__)

_BLOCK_TRIALS = 256  # trials read at once: 256 x 20,000 vertices x 8 bytes = 41 MB
_DONE = ".converted"


def resolve_noise_ceiling(layout: SimpleLayout, asked: bool | None) -> bool:
    """Whether to estimate noise ceilings: ``asked``, or (None) when every subject has repeats.

    Raises
    ------
    DataError
        ``asked`` is True and a subject shows every image once: naming its ``trials.csv``.
    """
    lacking = [s for s in layout.subjects.values() if not (s.n_trials() >= 2).any()]
    if asked and lacking:
        raise DataError(
            f"{lacking[0].trials_path}: every image has one trial, so no noise ceiling can be "
            "estimated (it needs images shown 2 or more times); add the repeated trials, or "
            "prepare with --no-noise-ceiling"
        )
    if asked is None and lacking:
        logger.info("no noise ceilings: %s shows every image once", lacking[0].name)
    return bool(asked if asked is not None else not lacking)


def conversion_bytes(layout: SimpleLayout) -> int:
    """About how many bytes the converted layout and truth take (images, averages)."""
    total = 0
    for subj in layout.subjects.values():
        if subj.is_array:
            with ImageArray(subj.image_source) as array:
                total += len(subj.image_keys) * int(np.prod(array.shape[1:]))
        else:
            total += sum(subj.image_file(i).stat().st_size for i in range(len(subj.image_keys)))
        total += 4 * len(subj.image_keys) * sum(subj.n_vertices(h) for h in HEMIS)
    return total


def _read_trial_rows(
    subj: SimpleSubject, hemi: str, data: np.ndarray, rows: np.ndarray, nan_policy: str
) -> np.ndarray:
    """Rows of the responses as float64 (read in file order), non-finite values handled."""
    order = np.argsort(rows, kind="stable")
    values = np.empty((rows.size, data.shape[1]), dtype=np.float64)
    values[order] = np.asarray(data[rows[order]], dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        if nan_policy != "zero":
            row = int(rows[np.flatnonzero(bad.any(axis=1))].min())
            raise DataError(
                f"{subj.response_path(hemi)}: NaN or inf at row {row}; fix the file, or "
                "prepare with --nan-policy zero to replace them by 0"
            )
        values[bad] = 0.0
    return values


def _session_stats(
    subj: SimpleSubject, hemi: str, data: np.ndarray, nan_policy: str
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per session, the mean and sd of every column over the session's trials (pass 1)."""
    moments = SessionMoments(data.shape[1])
    order = np.argsort(subj.trial_row, kind="stable")
    sessions = np.asarray(subj.trials.session, dtype=object)
    for start in range(0, order.size, _BLOCK_TRIALS):
        part = order[start : start + _BLOCK_TRIALS]
        values = _read_trial_rows(subj, hemi, data, subj.trial_row[part], nan_policy)
        moments.update(values, sessions[part].tolist())
    return moments.stats()


def _image_blocks(images: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    """``images`` cut into consecutive blocks of about ``_BLOCK_TRIALS`` trials."""
    blocks, start, total = [], 0, 0
    for i, image in enumerate(images):
        total += counts[image]
        if total >= _BLOCK_TRIALS:
            blocks.append(images[start : i + 1])
            start, total = i + 1, 0
    if start < images.size:
        blocks.append(images[start:])
    return blocks


def _average(
    subj: SimpleSubject,
    hemi: str,
    columns: np.ndarray,
    targets: list[tuple[np.ndarray, Path]],
    nan_policy: str,
    with_noise: bool,
) -> np.ndarray | None:
    """Write each image's mean response (columns reordered) into the targets; the noise variance.

    Parameters
    ----------
    targets : list of (image indices, path)
        The images, in output row order, and the ``.npy`` to write their averages to.

    Returns
    -------
    ndarray of shape (n_columns,) or None
        The mean within-image variance of z-scored trials (pass 2), when ``with_noise``.
    """
    data = open_array(subj.response_path(hemi), "responses")
    stats = _session_stats(subj, hemi, data, nan_policy) if with_noise else None
    counts = subj.n_trials()
    by_image = np.argsort(subj.trial_image, kind="stable")
    starts = np.r_[0, np.cumsum(counts)]
    sessions = np.asarray(subj.trials.session, dtype=object)
    total, n_repeated = np.zeros(columns.size), 0
    for images, path in targets:
        with atomic_path(path, suffix=".npy") as tmp:
            out = np.lib.format.open_memmap(
                tmp, mode="w+", dtype=np.float32, shape=(images.size, columns.size)
            )
            done = 0
            for block in _image_blocks(images, counts):
                trials = np.concatenate([by_image[starts[i] : starts[i + 1]] for i in block])
                raw = _read_trial_rows(subj, hemi, data, subj.trial_row[trials], nan_policy)
                values = raw[:, columns]
                cut = np.r_[0, np.cumsum(counts[block])[:-1]]
                means = np.add.reduceat(values, cut, axis=0) / counts[block, None]
                with np.errstate(over="ignore"):
                    chunk = means.astype(np.float32)
                if not np.isfinite(chunk).all():
                    raise DataError(
                        f"{subj.response_path(hemi)}: averages beyond the range of float32; "
                        "check the file's scale (responses are z-scored values of a few units)"
                    )
                out[done : done + block.size] = chunk
                done += block.size
                if stats is not None:
                    z = zscore_sessions(raw, sessions[trials].tolist(), stats)
                    part, n = within_image_variance(z[:, columns], subj.trial_image[trials])
                    total, n_repeated = total + part, n_repeated + n
            out.flush()
            del out
    if stats is None:
        return None
    if n_repeated == 0:
        raise DataError(f"{subj.trials_path}: no image has two or more trials; no noise ceiling")
    return total / n_repeated


def _image_names(subj: SimpleSubject, base: Path) -> list[tuple[int, Path]]:
    """(image index, converted path) of every image: ``train-0001_nsd-<image id>.png``, ..."""
    names = []
    for test, split, folder in ((False, "train", "training"), (True, "test", "test")):
        for k, index in enumerate(subj.order(test)):
            name = f"{split}-{k + 1:04d}_nsd-{int(subj.image_id[index]):05d}.png"
            names.append(
                (int(index), base / subj.name / f"{folder}_split" / f"{folder}_images" / name)
            )
    return names


def source_files(layout: SimpleLayout, out: str | Path) -> dict[str, str]:
    """The original image (file, or array and row) of each converted image file, as text.

    Parameters
    ----------
    layout : SimpleLayout
    out : path
        The converted layout's folder (``STORE/source``).

    Returns
    -------
    dict of str to str
        Converted path -> ``path/to/img.jpg`` or ``path/to/images.h5 row 17``.
    """
    found = {}
    for subj in layout.subjects.values():
        for index, path in _image_names(subj, Path(out)):
            key = subj.image_keys[index]
            found[str(path)] = (
                f"{subj.image_source} row {key}" if subj.is_array else str(subj.image_file(index))
            )
    return found


def original_names(exc: BrainEncoderError, layout: SimpleLayout, out: Path) -> BrainEncoderError:
    """``exc`` naming the original image where it named a converted one (or ``exc`` itself).

    An image that cannot be decoded is found when the store decodes the converted
    copy; the user's file is the one to fix.
    """
    text = str(exc)
    for converted, original in source_files(layout, out).items():
        if text.startswith(converted + ":"):
            return type(exc)(original + text[len(converted) :])
    return exc


def _copy_images(subj: SimpleSubject, out: Path, workers: int | None) -> None:
    """Each image under its challenge name: file bytes copied, array rows written as PNG."""
    from PIL import Image

    jobs = [(i, p) for i, p in _image_names(subj, out) if not p.exists()]
    for split in ("training", "test"):
        (out / subj.name / f"{split}_split" / f"{split}_images").mkdir(parents=True, exist_ok=True)
    array = ImageArray(subj.image_source) if subj.is_array else None

    def write(job: tuple[int, Path]) -> None:
        index, path = job
        with atomic_path(path, suffix=".png") as tmp:
            if array is None:
                shutil.copyfile(subj.image_file(index), tmp)
            else:
                pixels = array.load(int(subj.image_keys[index]))
                Image.fromarray(pixels).save(tmp, format="PNG", compress_level=1)

    try:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(write, jobs))
    finally:
        if array is not None:
            array.close()


def _write_rois(subj: SimpleSubject, roi_dir: Path, n_fsaverage: int, order: dict) -> None:
    """Masks, challenge- and fsaverage-space ROI labels and pickled mappings (challenge format)."""
    for hemi in HEMIS:
        mask = np.zeros(n_fsaverage, dtype=np.int32)
        mask[subj.vertices[hemi]] = 1
        save_npy_atomic(roi_dir / f"{hemi}.all-vertices_fsaverage_space.npy", mask)
    for group in subj.roi_groups:
        mapping = read_roi_mapping(subj.root / "rois" / f"{group}.json")
        save_mapping(roi_dir / f"mapping_{group}.npy", {0: "Unknown", **mapping})
        for hemi in HEMIS:
            labels = subj.roi_labels(group, hemi).astype(np.int32)[order[hemi]]
            full = np.zeros(n_fsaverage, dtype=np.int32)
            full[np.sort(subj.vertices[hemi])] = labels
            save_npy_atomic(roi_dir / f"{hemi}.{group}_challenge_space.npy", labels)
            save_npy_atomic(roi_dir / f"{hemi}.{group}_fsaverage_space.npy", full)


def _convert_subject(
    layout: SimpleLayout,
    subj: SimpleSubject,
    out: Path,
    truth: Path,
    nan_policy: str,
    with_noise: bool,
    workers: int | None,
) -> None:
    base = out / subj.name
    dirs = {
        "roi": base / "roi_masks",
        "fmri": base / "training_split" / "training_fmri",
        "truth": truth / subj.name,
        "truth_train": truth / "train" / subj.name,
    }
    order = {h: np.argsort(subj.vertices[h], kind="stable") for h in HEMIS}
    train, test = subj.order(False), subj.order(True)
    counts = subj.n_trials()
    for hemi in HEMIS:  # the responses first: bad values stop before any image is copied
        targets = [(train, dirs["fmri"] / f"{hemi}_training_fmri.npy")]
        if test.size:
            targets.append((test, dirs["truth"] / f"{hemi}_test_fmri.npy"))
        noise_var = _average(subj, hemi, order[hemi], targets, nan_policy, with_noise)
        if noise_var is not None:
            ncsnr = ncsnr_from_noise_variance(noise_var)
            save_npy_atomic(dirs["truth"] / f"{hemi}_ncsnr.npy", ncsnr.astype(np.float32))
            for images, key in ((test, "truth"), (train, "truth_train")):
                if images.size:
                    nc = noise_ceiling(ncsnr, counts[images]).astype(np.float32)
                    save_npy_atomic(dirs[key] / f"{hemi}_noise_ceiling.npy", nc)
    _write_rois(subj, dirs["roi"], layout.n_fsaverage, order)
    _copy_images(subj, out, workers)
    (base / _DONE).touch()


def convert_simple(
    layout: SimpleLayout,
    out: str | Path,
    truth: str | Path,
    nan_policy: str = "error",
    with_noise: bool = True,
    workers: int | None = None,
) -> None:
    """Write ``layout`` in the challenge layout under ``out``, and its truth under ``truth``.

    Parameters
    ----------
    layout : SimpleLayout
        From :func:`~brainencoder.data.simple_layout.read_simple_layout`.
    out : path
        Folder to hold the ``subjXX`` folders (``STORE/source``).
    truth : path
        Folder to hold ``subjXX/{lh,rh}_{test_fmri,noise_ceiling,ncsnr}.npy`` and
        ``train/subjXX/{lh,rh}_noise_ceiling.npy`` (``STORE/truth``).
    nan_policy : {"error", "zero"}, default="error"
        NaN / inf in a trial's responses: an error naming file and row, or 0.
    with_noise : bool, default=True
        Estimate noise ceilings from the repeated trials.
    workers : int, optional
        Threads copying images.

    Raises
    ------
    DataError
        Naming the file: NaN / inf responses, averages beyond float32, an image that cannot be read.
    """
    out, truth = Path(out), Path(truth)
    for subj in layout.subjects.values():
        if (out / subj.name / _DONE).exists():
            continue
        logger.info("converting %s into the challenge layout", subj.name)
        _convert_subject(layout, subj, out, truth, nan_policy, with_noise, workers)
