"""In-silico experiments that make images: ``be.synthesize``.

It calls the same library code as ``brainencoder synthesize``, with the same
checks and one-line errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..util.errors import ConfigError

__all__ = ["synthesize"]


def synthesize(
    runs: str | Path | Sequence[str | Path],
    *,
    subject: str,
    rois: str | Sequence[str],
    out: str | Path,
    n: int = 8,
    pool: str | Path | None = None,
    data: str | Path | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Images made for a region by gradient ascent (``brainencoder synthesize``); returns the files.

    Parameters
    ----------
    runs : path or sequence of path
        Encoder runs (run folders, model files, exported folders); several: an
        ensemble in which each image is made by all members but one and checked
        by that one.
    subject : str
        A subject of the models.
    rois : str or sequence of 1 or 2 str
        The ROI whose mean predicted response the images raise (``"V1v"``), or
        two: the first minus the second (``--roi A --against B``).
    out : path
        The output folder (images/, rejected/, responses.npy, synthesized.csv,
        the figures, index.html).
    n : int, default=8
        Images to make (each its own start).
    pool : path, optional
        Natural images (a folder, or a ``.npy`` / HDF5 array of uint8 images): an
        image is kept only if its checking member predicts it above its best
        image of the pool (default: no check).
    data : path, optional
        Challenge data root with the ROI files (default: the first run's store's source).
    options : mapping, optional
        The optimisation's settings, the fields of
        :class:`~brainencoder.experiments.synthesize_param.AscentOptions` (the
        command's options of the same names): ``steps`` (128), ``lr`` (0.05),
        ``jitter`` (8 pixels), ``blur`` (0), ``tv`` (0.05), ``decay`` (1) and
        ``seed`` (0); checked by name and type.

    Returns
    -------
    dict of str to Path
        ``page``, ``images`` (the kept images' folder), ``responses``, ``table``.

    Examples
    --------
    >>> be.synthesize(["runs/p1", "runs/p1b", "runs/p1c"], subject="subj01", rois="V1v",
    ...               out="made-v1v", pool="pool.npy", options={"steps": 64})  # doctest: +SKIP
    """
    from ..experiments.synthesize import synthesize as make
    from ..experiments.synthesize_options import AscentOptions
    from ..util.typecheck import from_mapping

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"'n' must be an integer >= 1; got {n!r}")
    settings = from_mapping(AscentOptions, dict(options or {}))
    run_list = [runs] if isinstance(runs, str | Path) else list(runs)
    names = [rois] if isinstance(rois, str) else list(rois)
    return make(run_list, subject, names, out, n=n, pool=pool, data=data, options=settings)
