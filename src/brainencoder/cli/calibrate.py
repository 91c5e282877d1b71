"""``brainencoder calibrate``: calibrate an ensemble's prediction intervals on held-out rows."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_out, add_plugin, add_seed, add_store, add_trust_splits, load_plugins

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``calibrate`` command to ``subparsers``."""
    p = subparsers.add_parser(
        "calibrate",
        help="calibrate the prediction intervals of runs (an ensemble) on rows they held out",
    )
    p.add_argument(
        "runs", type=Path, nargs="+", help="run folders or model files: the ensemble's members"
    )
    add_store(p, "default: the first run's store")
    p.add_argument(
        "--split",
        action="append",
        choices=["val", "testval"],
        default=None,
        help="held-out split to calibrate on (repeat for both; default: each every run holds out)",
    )
    add_out(p, "the .npz to write (default: calibration-<digest>.npz in the first run)", False)
    add_seed(p)
    add_trust_splits(p)
    add_plugin(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Calibrate; print where the file is and what it holds."""
    from ..api.calibration import calibrate
    from ..runs.calibration import read_calibration

    load_plugins(args.plugins)
    path = calibrate(
        args.runs,
        store=args.store,
        splits=args.split,
        out=args.out,
        seed=args.seed,
        trust_splits=args.trust_splits,
    )
    cal = read_calibration(path)
    print(f"wrote {path}: {len(cal.members)} runs, calibrated on {'+'.join(cal.splits)}")
    for name, sub in cal.subjects.items():
        print(f"  {name}: {sub.rows['scale']} rows for the scales, {sub.rows['scores']} scored")
    return 0
