"""``brainencoder validate``: check a dataset (the challenge's layout or your own experiment's)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``validate`` command to ``subparsers``."""
    p = subparsers.add_parser(
        "validate", help="check a dataset (the challenge's layout or your own)"
    )
    p.add_argument("data_root", type=Path)
    p.add_argument("--skip-images", action="store_true", help="do not decode-check images")
    return p


def run(args: argparse.Namespace) -> int:
    """Print the dataset's table and problems; 1 if a problem blocks training."""
    from ..api.data_tools import validate

    report = validate(args.data_root, check_images=not args.skip_images, progress=True)
    if report.layout is not None:
        print(report.table())
    for problem in report.problems:
        print(problem)
    n_block = sum(p.blocking for p in report.problems)
    print(
        f"{len(report.problems)} problem(s), {n_block} blocking training"
        if report.problems
        else "no problems found"
    )
    return 0 if report.ok else 1
