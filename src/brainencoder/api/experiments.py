"""The experiments as Python functions: adapt, explore, compare.

A new subject from few images, images ranked by a region's predicted response,
and runs side by side: each calls the same library code as its command, with
the same checks and one-line errors (re-exported by
:mod:`brainencoder.api.workflows`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from ..runs.run import Run
from ..util.errors import ConfigError

__all__ = ["adapt", "compare", "explore"]

_SPLITS = ("testval", "val", "test")  # compare's choices


def _count(key: str, value: Any, minimum: int = 1) -> None:
    """A ConfigError unless ``value`` is an integer >= ``minimum`` (as the command's parser)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"'{key}' must be an integer >= {minimum}; got {value!r}")


def _image_names(images: Any) -> Path | list[str]:
    """``images=`` of :func:`adapt`: a list file's path, or a list of image file names."""
    if isinstance(images, (str, os.PathLike)):
        return Path(images)
    if not isinstance(images, Sequence) or not all(isinstance(n, str) for n in images):
        raise ConfigError(
            "'images' must be a list file or a sequence of image file names "
            f"(e.g. ['train-0001_nsd-00013.png']); got {type(images).__name__}"
        )
    return list(images)


def adapt(
    run: str | Path,
    data: str | Path,
    subject: str,
    out: str | Path,
    *,
    n_images: int | None = None,
    images: str | Path | Sequence[str] | None = None,
    seed: int = 0,
    epochs: int = 60,
    batch_size: int = 32,
    lr: float = 1e-2,
    weight_decay: float = 0.01,
    val_fraction: float = 0.15,
    early_stop_patience: int = 10,
    ridge_alphas: Sequence[float] | None = None,
    init: Literal["average", "default"] = "average",
    cache_dir: str | Path | None = None,
    personal: bool = True,
    pulls: Sequence[float] = [0.01, 0.1, 1.0],  # AdaptConfig's default (never mutated)
    folds: int = 5,
    overwrite: bool = False,
    overwrite_subject: bool = False,
) -> Run:
    """Add a new subject to a trained model from few images (``brainencoder adapt``).

    The training settings are the fields of
    :class:`~brainencoder.experiments.adapt.AdaptConfig` (``key=value`` on the command
    line), checked the same way.

    Parameters
    ----------
    run : path
        The trained run or model file (any readout).
    data : path
        Challenge-layout folder or store holding ``subject``.
    subject : str
        The new subject (``subjXX`` in ``data``).
    out : path
        The new run folder.
    n_images : int, optional
        A seeded random subset of this many train-split images: 0 (none: the
        zero-shot model, the group's prediction at the subject's vertices) or
        >= 10. Default: all (or ``images``).
    images : path or sequence of str, optional
        Train on exactly these images: a list file (one image file name per
        line, blank lines and ``#`` comments ignored; what ``brainencoder plan``
        writes) or the file names themselves, as in the subject's
        ``training_split/training_images`` folder (``train-0001_nsd-00013.png``),
        all of its train split. Not with ``n_images``.
    seed : int, default=0
    epochs : int, default=60
        At most this many epochs.
    batch_size : int, default=32
    lr : float, default=1e-2
        AdamW on the subject's own parameters.
    weight_decay : float, default=0.01
    val_fraction : float, default=0.15
        With ``folds=0``: the fraction of the images held out to pick the best
        epoch and the pull, in (0, 0.5).
    early_stop_patience : int, default=10
        Stop after this many epochs without a better validation median r.
    ridge_alphas : sequence of float, optional
        Ridge alphas for vertices outside the group space (default: 15 from 1e-2 to 1e5).
    init : {"average", "default"}, default="average"
        Start at the mean of the other subjects' maps, or at the readout's own init.
    cache_dir : path, optional
        Where the feature cache lives (default: inside the store).
    personal : bool, default=True
        The subject's own residual of the readout's per-vertex tuning (False:
        its gain and offset only).
    pulls : sequence of float, default=[0.01, 0.1, 1.0]
        Strengths of the L2 pull toward the group's tuning, the best on the
        subject's own images kept.
    folds : int, default=5
        Choose the pull by this many folds of the images (one fit per fold and
        pull) and keep the mean of the chosen pull's fold fits; 0: one fit per
        pull, the best on the ``val_fraction`` held out.
    overwrite : bool, default=False
        Replace the run in ``out``.
    overwrite_subject : bool, default=False
        Replace the model's subject of that name (its vertices must match).

    Returns
    -------
    Run

    Examples
    --------
    >>> run = be.adapt("runs/p2", "data", "subj09", "runs/p9", n_images=300)  # doctest: +SKIP
    >>> be.load(run.path).subjects[-1]                                       # doctest: +SKIP
    'subj09'
    """
    from ..experiments.adapt import AdaptConfig, Overwrite
    from ..experiments.adapt import adapt as adapt_subject
    from ..util.typecheck import from_mapping

    settings = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "val_fraction": val_fraction,
        "early_stop_patience": early_stop_patience,
        "init": init,
        "cache_dir": None if cache_dir is None else os.fspath(cache_dir),
    }
    if ridge_alphas is not None:
        settings["ridge_alphas"] = list(ridge_alphas)
    settings.update(personal=personal, pulls=list(pulls), folds=folds)
    if n_images is not None:
        _count("n_images", n_images, minimum=0)
        if images is not None:
            raise ConfigError("pass n_images or images, not both")
    config = from_mapping(AdaptConfig, settings)
    adapt_subject(
        run,
        data,
        subject,
        out,
        n_images=n_images if images is None else _image_names(images),
        seed=seed,
        config=config,
        overwrite=Overwrite(overwrite, overwrite_subject),
    )
    return Run(out)


def explore(
    run: str | Path,
    images: str | Path,
    subject: str,
    rois: str | Sequence[str],
    out: str | Path,
    *,
    top: int = 8,
    data: str | Path | None = None,
    dataset: str | None = None,
    rows: slice | None = None,
    ensemble: Sequence[str | Path] = (),
    interval: float | None = None,
    calibration: str | Path | None = None,
) -> dict[str, Path]:
    """Rank images by predicted ROI response (``brainencoder explore``); returns the files.

    Parameters
    ----------
    run : path
        A run folder or model file.
    images : path
        A folder of images, or uint8 images in a ``.npy`` or HDF5 file.
    subject : str
        A subject of the model, or ``"all"`` (their mean).
    rois : str or sequence of 1 or 2 str
        An ROI (``"FFA-1"``), or two: ranked by the first minus the second.
    out : path
        The output folder (ranking.csv, montage.png, index.html, ...).
    top : int, default=8
        Images shown at each end of the ranking.
    data : path, optional
        Challenge data root with the ROI files (default: the run's store's source).
    dataset : str, optional
        HDF5 dataset of ``images`` (default: its only image dataset).
    rows : slice, optional
        Rows of an image array file (``slice(0, 1000)``; default all).
    ensemble : sequence of path, default=()
        More runs ranked with ``run`` as one model (the members' mean).
    interval : float, optional
        Give each ranked image the calibrated interval of this level for its ROI
        score, and say where the top ranks are not separable (``be.calibrate``
        the runs first).
    calibration : path, optional
        The calibration file (default: the one beside ``run``).

    Returns
    -------
    dict of str to Path
        The files written (see :func:`brainencoder.experiments.explore.explore`).

    Examples
    --------
    >>> be.explore("runs/p2", "images/", "subj01", ["FFA-1", "PPA"], "faces")  # doctest: +SKIP
    """
    from ..experiments.explore import ArrayRows, Ensemble
    from ..experiments.explore import explore as explore_images

    names = [rois] if isinstance(rois, str) else list(rois)
    array = ArrayRows(dataset, rows)
    if ensemble or interval is not None or calibration is not None:
        run = Ensemble([run, *ensemble], interval, calibration)
    return explore_images(run, images, subject, names, out, top=top, data=data, array=array)


def compare(
    runs: Sequence[str | Path | Sequence[str | Path]],
    out: str | Path,
    *,
    split: Literal["testval", "val", "test"] = "testval",
    store: str | Path | None = None,
    noise_ceiling: str | Path | None = None,
    n_boot: int = 200,
    seed: int = 0,
    trust_splits: bool = False,
) -> dict[str, Path]:
    """Runs side by side with bootstrap intervals (``brainencoder compare``); returns the files.

    Parameters
    ----------
    runs : sequence of path or of sequences of paths
        Run folders or model files, the first the reference; an entry that is a
        sequence of runs is their ensemble (the mean prediction).
    out : path
        The output folder (comparison.csv, the figures, index.html).
    split : {"testval", "val", "test"}, default="testval"
        "test" needs held-back responses in ``noise_ceiling``.
    store : path, optional
        Default: the first run's store (every run must have been trained on it).
    noise_ceiling : path, optional
        ``subjXX/{lh,rh}_noise_ceiling.npy`` (and test responses for "test").
    n_boot : int, default=200
        Bootstrap resamples of the images.
    seed : int, default=0
        Seed of the resampling.
    trust_splits : bool, default=False
        Compare models that record no training splits on val or testval.

    Returns
    -------
    dict of str to Path
        The files written (see :func:`brainencoder.evaluation.compare.compare_runs`).

    Examples
    --------
    >>> be.compare(["runs/p1", "runs/p2", ["runs/p1", "runs/p1b"]], "comparison")  # doctest: +SKIP
    """
    from ..evaluation.compare import compare_runs
    from ..util.typecheck import check_seed

    if split not in _SPLITS:
        raise ConfigError(f"'split' must be one of {list(_SPLITS)}; got {split!r}")
    _count("n_boot", n_boot)
    return compare_runs(
        list(runs),
        out,
        split=split,
        store=store,
        noise_ceiling=noise_ceiling,
        n_boot=n_boot,
        seed=check_seed("seed", seed),
        trust_splits=trust_splits,
    )
