"""A run's figures and report page as Python functions: plot, report.

Each does the work of its command (the command parses its options, calls
these and prints the paths), with the same checks and one-line errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from ..util.errors import ConfigError, DataError

__all__ = ["plot", "report"]

_METRICS = ("score", "pearson", "r2")  # plot's choices


def _read_spheres(folder: Path) -> dict[str, np.ndarray]:
    """The fsaverage ``lh.sphere`` and ``rh.sphere`` vertex coordinates, (163842, 3) each."""
    import nibabel.freesurfer as fsio

    sphere = {}
    for h in ("lh", "rh"):
        path = Path(folder) / f"{h}.sphere"
        try:
            sphere[h] = fsio.read_geometry(str(path))[0]
        except (OSError, ValueError) as exc:
            raise DataError(
                f"{path}: cannot read the fsaverage sphere ({exc}); pass "
                "FreeSurfer's subjects/fsaverage/surf folder"
            ) from None
    return sphere


def plot(
    run: str | Path,
    *,
    split: str = "testval",
    metrics: Sequence[Literal["score", "pearson", "r2"]] | None = None,
    fsaverage_surf: str | Path | None = None,
) -> list[Path]:
    """Cortical maps, ROI bars and learning curves of a run (``brainencoder plot``).

    Needs the run's evaluation on ``split`` (``be.evaluate(run, split)`` first);
    writes PNG files into ``run/figures``.

    Parameters
    ----------
    run : path
        A run folder.
    split : str, default="testval"
        The evaluated split whose metrics are drawn.
    metrics : sequence of {"score", "pearson", "r2"}, optional
        Default: pearson, and score when the evaluation had noise ceilings.
    fsaverage_surf : path, optional
        FreeSurfer's ``subjects/fsaverage/surf`` folder (``lh.sphere``,
        ``rh.sphere``) to place every vertex on fsaverage5; default: draw the
        vertices of the fsaverage5 subset.

    Returns
    -------
    list of Path
        The figures written.

    Raises
    ------
    ConfigError
        An unknown metric.
    DataError
        No evaluation of ``split`` in the run, a metric it does not hold, or an
        unreadable sphere.

    Examples
    --------
    >>> table = be.evaluate("runs/p2", "testval", noise_ceiling="synthetic/truth")  # doctest: +SKIP
    >>> be.plot("runs/p2", metrics=["score"])                                       # doctest: +SKIP
    """
    from ..evaluation.figures import plot_run

    if isinstance(metrics, str):
        metrics = [metrics]
    chosen = None if metrics is None else list(metrics)
    unknown = [m for m in chosen or [] if m not in _METRICS]
    if unknown:
        raise ConfigError(f"'metrics' must be among {list(_METRICS)}; got {unknown}")
    sphere = None if fsaverage_surf is None else _read_spheres(Path(fsaverage_surf))
    return plot_run(run, split, chosen, sphere)


def report(run: str | Path, *, out: str | Path | None = None) -> Path:
    """One self-contained HTML page of a run (``brainencoder report``).

    The run's facts, its evaluation tables, figures and pages (explore,
    compare), an interactive surface view where possible, and its config; it
    opens offline.

    Parameters
    ----------
    run : path
        A run folder.
    out : path, optional
        The page (``.html`` or ``.htm``); default ``run/report.html``.

    Returns
    -------
    Path
        The page written.

    Raises
    ------
    UnsafeOverwriteError
        ``out`` is a folder or does not end in .html / .htm.
    DataError
        ``run`` is not a run folder.

    Examples
    --------
    >>> page = be.report("runs/p2")                              # doctest: +SKIP
    """
    from ..evaluation.report import write_report
    from ..util.ownership import check_output_file

    check_output_file(out, (".html", ".htm"))
    return write_report(run, out)
