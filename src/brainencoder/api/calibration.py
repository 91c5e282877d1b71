"""``be.calibrate``: calibrate an ensemble's prediction intervals (``brainencoder calibrate``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from ..util.errors import ConfigError

__all__ = ["calibrate"]


def calibrate(
    runs: str | Path | Sequence[str | Path],
    *,
    store: str | Path | None = None,
    splits: Sequence[Literal["val", "testval"]] | None = None,
    out: str | Path | None = None,
    seed: int = 0,
    trust_splits: bool = False,
) -> Path:
    """Calibrate an ensemble's intervals on rows none of its runs trained on; returns the file.

    Split conformal: each subject's held-out rows are cut in two (seeded); the
    first part gives every vertex its scale ``a_v`` (the root mean square of
    the ensemble's error there), the second the scores
    ``|y - mean| / (a_v + members' sd)``, whose conformal quantile sets the
    interval ``mean +- q (a_v + sd)`` of ``Model.predict(..., interval=...)``.

    Parameters
    ----------
    runs : path or sequence of path
        The ensemble's run folders or model files (one run: its spread is zero).
    store : path, optional
        Default: the first run's store (each adapted subject's own).
    splits : sequence of {"val", "testval"}, optional
        Default: each of them that every run holds out; none held out is refused.
    out : path, optional
        The ``.npz`` to write (default: ``calibration-<digest>.npz`` in the first
        run's folder, where ``predict`` looks for it).
    seed : int, default=0
        Of the cut of each subject's rows into scale and score rows.
    trust_splits : bool, default=False
        Accept runs that record no training splits.

    Returns
    -------
    Path
        The calibration file.

    Raises
    ------
    DataError
        No rows held out by every run (one line naming the run and split), too
        few of them, or runs of different vertex spaces.

    Examples
    --------
    >>> path = be.calibrate(["runs/s0", "runs/s1", "runs/s2"])                # doctest: +SKIP
    >>> model = be.load("runs/s0", "runs/s1", "runs/s2")                      # doctest: +SKIP
    >>> model.predict("images/", subject="subj01", interval=0.9).save("p.npz")  # doctest: +SKIP
    """
    from ..runs.calibrate import calibrate_runs
    from ..util.typecheck import check_seed

    items = [runs] if isinstance(runs, str | Path) else list(runs)
    if splits is not None and (isinstance(splits, str) or not splits):
        raise ConfigError(f"'splits' must be a list of 'val' / 'testval'; got {splits!r}")
    return calibrate_runs(
        items,
        store=store,
        splits=None if splits is None else list(splits),
        out=out,
        seed=check_seed("seed", seed),
        trust_splits=trust_splits,
    )
