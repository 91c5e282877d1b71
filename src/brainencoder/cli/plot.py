"""``brainencoder plot``: cortical maps, ROI bars and learning curves of a run."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_plugin, load_plugins

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``plot`` command to ``subparsers``."""
    p = subparsers.add_parser("plot", help="cortical maps, ROI bars and learning curves of a run")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--split", default="testval")
    p.add_argument(
        "--metric",
        action="append",
        choices=("score", "pearson", "r2"),
        help="repeatable; default: pearson, and score when noise ceilings were given",
    )
    p.add_argument(
        "--fsaverage-surf",
        type=Path,
        default=None,
        help="FreeSurfer fsaverage/surf folder (lh.sphere, rh.sphere) to place "
        "every vertex on fsaverage5; default: the fsaverage5 subset",
    )
    add_plugin(p)
    return p


def _read_spheres(folder: Path) -> dict:
    """The fsaverage ``lh.sphere`` and ``rh.sphere`` vertex coordinates in ``folder``."""
    import nibabel.freesurfer as fsio

    from ..util.errors import DataError

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


def run(args: argparse.Namespace) -> int:
    """Draw the figures; print their paths."""
    from ..evaluation.figures import plot_run

    load_plugins(args.plugins)
    sphere = _read_spheres(args.fsaverage_surf) if args.fsaverage_surf else None
    for path in plot_run(args.run_dir, args.split, args.metric, sphere):
        print(path)
    return 0
