"""Which images to show a new subject, as a Python function: ``be.plan``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

__all__ = ["plan"]


def plan(
    runs: str | Path | Sequence[str | Path],
    pool: str | Path,
    *,
    n: int = 100,
    out: str | Path | None = None,
    method: Literal["dopt", "cover", "kcenter", "disagreement", "random"] = "dopt",
    seed: int = 0,
    train_split: tuple[str | Path, str] | None = None,
    overwrite: bool = False,
) -> list[str]:
    """Pick the images of a pool that teach ``adapt`` most (``brainencoder plan``).

    The model predicts the average subject's response to every pool image; the
    images are compared by the leading principal components of those
    predictions and ``method`` picks ``n`` of them
    (:mod:`brainencoder.experiments.plan_select`; what each gains over random
    images: docs/in-silico.md). Pass the names to ``be.adapt(images=...)``.

    Parameters
    ----------
    runs : path or sequence of paths
        A run folder, model file or exported folder; several: their ensemble.
    pool : path
        A folder of images (the new subject's ``training_images``, say), or uint8
        images in a ``.npy`` or HDF5 file.
    n : int, default=100
        How many images to pick.
    out : path, optional
        Also write the names to this ``.txt`` file, one per line (what
        ``adapt --images`` reads), and beside it a picture (``list.txt`` ->
        ``list.png``): the pool in the plane of the first two principal
        components of the predicted responses with the picked images
        numbered in pick order, and the first 12 picked images.
    method : {"dopt", "cover", "kcenter", "disagreement", "random"}, default="dopt"
        ``dopt``: greedy D-optimal (the one that beat random images at 25,
        100 and 400 images in ``benchmarks/adapt_plan.py``); ``cover``: the
        image nearest each of ``n`` k-means centres; ``kcenter``:
        farthest-point; ``disagreement``: where an ensemble's members disagree
        most (two or more runs); ``random``.
    seed : int, default=0
        Of ``random`` and of ``cover``'s k-means start.
    train_split : (path, str), optional
        A store and a subject in it: keep only the pool images of that
        subject's train split (the only ones ``adapt`` trains on; its val and
        test-val images are kept for evaluation).
    overwrite : bool, default=False
        Replace an existing ``out`` (and the picture beside it, only if
        ``plan`` wrote it).

    Returns
    -------
    list of str
        ``n`` image file names, in the order picked.

    Raises
    ------
    ConfigError
        A bad ``n``, ``method`` or seed, before any image is read.
    DataError
        A run or pool that cannot be read.
    BrainEncoderError
        ``out`` or its picture exists and ``overwrite`` is false; an
        ``UnsafeOverwriteError`` where either may not be written (inside an
        input, a folder, or a picture ``plan`` did not write), before any work.

    Examples
    --------
    >>> pool = "data/subj09/training_split/training_images"                    # doctest: +SKIP
    >>> names = be.plan("runs/p1", pool, n=100)                                # doctest: +SKIP
    >>> be.adapt("runs/p1", "data", "subj09", "runs/p9", images=names)  # doctest: +SKIP
    """
    from ..experiments.plan import plan_images
    from ..util.errors import ConfigError

    if train_split is not None and (isinstance(train_split, (str, Path)) or len(train_split) != 2):
        raise ConfigError(f"'train_split' must be (store, subject); got {train_split!r}")
    many = [runs] if isinstance(runs, (str, Path)) else list(runs)
    only = None if train_split is None else (train_split[0], str(train_split[1]))
    return plan_images(many, pool, n, out, method, seed, only, overwrite)
