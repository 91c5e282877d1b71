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


def run(args: argparse.Namespace) -> int:
    """Draw the figures; print their paths."""
    from ..api.outputs import plot

    load_plugins(args.plugins)
    for path in plot(
        args.run_dir, split=args.split, metrics=args.metric, fsaverage_surf=args.fsaverage_surf
    ):
        print(path)
    return 0
