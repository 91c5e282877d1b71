"""The synthetic dataset in the simple layout of your own experiment, with repeated trials.

:func:`make_synthetic_simple` writes the dataset :func:`~.synthetic.make_synthetic`
writes (same config, same images, same planted truth), in the layout of
:mod:`.simple_layout`: every image is shown ``repeats`` times, and the trials
of an image average exactly (to float32 rounding) to the challenge layout's
response of that image. A trial's noise is ``sqrt(repeats)`` times the
challenge response's, so the planted noise ceilings
(``truth/subjXX/{lh,rh}_noise_ceiling.npy``, for responses averaged over
``repeats`` trials) are what :mod:`brainencoder.core.noise_ceiling` estimates
from the repeats. Columns are written in a shuffled vertex order and trials
in a shuffled row order, with one session per repeat, so that nothing relies
on sorted input.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path

import numpy as np

from ..util.errors import BrainEncoderError
from ..util.fileio import save_npy_atomic, write_bytes_atomic, write_json_atomic
from .images import load_image
from .layout import HEMIS, SubjectLayout, read_layout
from .synthetic import SyntheticConfig, make_synthetic

__all__ = ["IMAGE_FORMATS", "make_synthetic_simple", "write_simple_layout"]

IMAGE_FORMATS = ("folder", "npy")


def _trials(
    rng: np.random.Generator, measured: np.ndarray, nc: np.ndarray, repeats: int
) -> np.ndarray:
    """``repeats`` trials per image whose mean is ``measured``; shape (repeats, n_images, n_cols).

    Each trial's noise has ``repeats`` times the variance of the measured
    response's noise (``(1 - nc) / nc`` for a standardized signal).
    """
    sd = np.sqrt((1 - nc) / nc) * np.sqrt(repeats)
    z = rng.standard_normal((repeats, *measured.shape))
    deviations = (z - z.mean(0)) * sd if repeats > 1 else 0 * z
    return measured[None].astype(np.float64) + deviations


def _write_subject(
    subj: SubjectLayout,
    truth: Path,
    out: Path,
    repeats: int,
    images: str,
    rng: np.random.Generator,
) -> None:
    ids = np.concatenate([subj.nsd_train, subj.nsd_test])
    files = [*subj.train_images, *subj.test_images]
    is_test = np.r_[np.zeros(len(subj.train_images), bool), np.ones(len(subj.test_images), bool)]
    if images == "folder":
        (out / "images").mkdir(parents=True)
        keys = [f"nsd-{int(i):05d}.png" for i in ids]
        for key, path in zip(keys, files):
            shutil.copyfile(path, out / "images" / key)
    else:
        keys = [str(k) for k in range(len(files))]
        save_npy_atomic(out / "images.npy", np.stack([load_image(p) for p in files]))
    n_images = ids.size
    trial_rows = rng.permutation(n_images * repeats)  # trial (repeat r, image j) -> row
    responses_dir = out / "responses"
    for hemi in HEMIS:
        measured = np.concatenate(
            [subj.load_fmri(hemi, mmap=False), np.load(truth / f"{hemi}_test_fmri.npy")]
        )
        nc = np.load(truth / f"{hemi}_noise_ceiling.npy").astype(np.float64)
        perm = rng.permutation(measured.shape[1])  # columns in shuffled vertex order
        trials = _trials(rng, measured, nc, repeats).reshape(-1, measured.shape[1])
        rows = np.empty_like(trials, dtype=np.float32)
        rows[trial_rows] = trials
        save_npy_atomic(responses_dir / f"{hemi}.npy", rows[:, perm])
        vertices = np.flatnonzero(subj.masks[hemi])[perm]
        save_npy_atomic(responses_dir / f"{hemi}.vertices.npy", vertices.astype(np.int64))
        for group in subj.roi_groups:
            labels = subj.load_rois(group, hemi)[perm].astype(np.int32)
            save_npy_atomic(out / "rois" / f"{hemi}.{group}.npy", labels)
            if hemi == "lh":
                mapping = {str(k): v for k, v in subj.load_mapping(group).items()}
                write_json_atomic(out / "rois" / f"{group}.json", mapping)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["image", "row", "split", "session", "image_id"])
    lines = [
        (
            keys[j],
            int(trial_rows[r * n_images + j]),
            "test" if is_test[j] else "train",
            r + 1,
            ids[j],
        )
        for r in range(repeats)
        for j in range(n_images)
    ]
    writer.writerows(sorted(lines, key=lambda line: line[1]))  # in row order, as recorded
    write_bytes_atomic(out / "trials.csv", text.getvalue().encode())


def write_simple_layout(
    root: str | Path, out: str | Path, repeats: int = 3, images: str = "folder", seed: int = 0
) -> Path:
    """Write a synthetic challenge-layout dataset (with its truth) again in the simple layout.

    Parameters
    ----------
    root : path
        Written by :func:`~.synthetic.make_synthetic`: ``subjXX/`` and
        ``truth/subjXX/{lh,rh}_{test_fmri,noise_ceiling}.npy``.
    out : path
        New folder (see :func:`make_synthetic_simple`); ``truth/`` is copied into it.
    repeats : int, default=3
        Trials per image (train and test).
    images : {"folder", "npy"}, default="folder"
    seed : int, default=0
        Seeds the trial noise and the shuffled orders.

    Returns
    -------
    out : Path
    """
    if not isinstance(repeats, int) or not 1 <= repeats <= 20:
        raise BrainEncoderError(f"'repeats' must be an integer in [1, 20]; got {repeats!r}")
    if images not in IMAGE_FORMATS:
        raise BrainEncoderError(f"'images' must be one of {IMAGE_FORMATS}; got {images!r}")
    root, out = Path(root), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BrainEncoderError(f"{out} exists and is not empty; choose a new folder")
    work = out.parent / f".{out.name}.tmp"
    shutil.rmtree(work, ignore_errors=True)  # left by a killed writer
    try:
        layout = read_layout(root)
        for k, (name, subj) in enumerate(layout.subjects.items()):
            rng = np.random.default_rng([seed, k, 7])
            _write_subject(subj, root / "truth" / name, work / name, repeats, images, rng)
        shutil.copytree(root / "truth", work / "truth")
        n_fsaverage = next(iter(layout.subjects.values())).masks["lh"].size
        description = f"brainencoder synthetic data, {repeats} trials per image"
        write_json_atomic(
            work / "experiment.json",
            {"layout": "simple", "fsaverage_vertices": n_fsaverage, "description": description},
        )
        if out.exists():
            out.rmdir()
        os.replace(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def make_synthetic_simple(
    out: str | Path,
    config: SyntheticConfig | None = None,
    repeats: int = 3,
    images: str = "folder",
) -> Path:
    """Write the synthetic dataset in the simple layout, with its truth.

    Parameters
    ----------
    out : path
        Folder to create: ``experiment.json``, ``subjXX/`` (``images/`` or
        ``images.npy``, ``trials.csv``, ``responses/``, ``rois/``) and
        ``truth/subjXX/{lh,rh}_{noise_ceiling,test_fmri,test_signal}.npy`` as
        :func:`~.synthetic.make_synthetic` writes them (the noise ceilings are
        those of responses averaged over ``repeats`` trials).
    config : SyntheticConfig, optional
        Sizes, noise and seed; the same config gives the images and averaged
        responses of ``make_synthetic``.
    repeats : int, default=3
        Trials per image (train and test).
    images : {"folder", "npy"}, default="folder"
        Image files in ``images/``, or one uint8 array ``images.npy`` (n_images, H, W, 3).

    Returns
    -------
    out : Path
    """
    config = config or SyntheticConfig()
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BrainEncoderError(f"{out} exists and is not empty; choose a new folder")
    challenge = out.parent / f".{out.name}.challenge.tmp"
    shutil.rmtree(challenge, ignore_errors=True)  # left by a killed writer
    try:
        make_synthetic(challenge, config)
        return write_simple_layout(challenge, out, repeats, images, config.seed)
    finally:
        shutil.rmtree(challenge, ignore_errors=True)
