"""``brainencoder compare``: runs side by side, differences with bootstrap intervals."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_out, add_plugin, add_store, add_trust_splits, load_plugins
from .types import positive_int

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``compare`` command to ``subparsers``."""
    p = subparsers.add_parser(
        "compare", help="runs side by side, differences with bootstrap intervals"
    )
    p.add_argument("run_dirs", type=Path, nargs="+", help="the first is the reference")
    p.add_argument("--split", default="testval", choices=("testval", "val", "test"))
    add_out(p, "output folder")
    add_store(p, "default: the first run's store")
    p.add_argument(
        "--noise-ceiling", type=Path, default=None, help="noise ceilings (and test responses)"
    )
    p.add_argument(
        "--ensemble",
        action="append",
        metavar="RUN,RUN[,...]",
        help="also compare the mean prediction of these runs (repeatable)",
    )
    p.add_argument("--n-boot", type=positive_int, default=200, help="bootstrap resamples")
    add_trust_splits(p)
    add_plugin(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Compare; print where the table, figures and page are."""
    from ..evaluation.compare import compare_runs

    load_plugins(args.plugins)
    ensembles = [[Path(r) for r in spec.split(",")] for spec in args.ensemble or []]
    outputs = compare_runs(
        [*args.run_dirs, *ensembles],
        args.out,
        args.split,
        args.store,
        args.noise_ceiling,
        args.n_boot,
        trust_splits=args.trust_splits,
    )
    for name, path in outputs.items():
        print(f"  {name:<6} {path}")
    return 0
