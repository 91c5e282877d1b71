"""``brainencoder soup``: average the weights of compatible runs (model soup)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import (
    add_out,
    add_overwrite,
    add_plugin,
    add_store,
    add_trust_splits,
    load_plugins,
)

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``soup`` command to ``subparsers``."""
    p = subparsers.add_parser("soup", help="average the weights of compatible runs (model soup)")
    p.add_argument("run_dirs", type=Path, nargs="+", help="runs fine-tuned from one model")
    add_out(p, "new run folder")
    p.add_argument(
        "--uniform", action="store_true", help="average every run (default: greedy by val score)"
    )
    add_store(p, "default: the first run's store")
    add_overwrite(p)
    add_trust_splits(p)
    add_plugin(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Write the soup run; print which ingredients were kept and its val score."""
    from ..api.model_tools import soup

    load_plugins(args.plugins)
    summary = soup(
        args.run_dirs,
        out=args.out,
        uniform=args.uniform,
        store=args.store,
        overwrite=args.overwrite,
        trust_splits=args.trust_splits,
    )
    for item in summary["ingredients"]:
        mark = "kept" if item["run"] in summary["kept"] else "left out"
        print(f"  {item['run']}: val/r2_median {item['val']:.4f} ({mark})")
    print(
        f"{summary['kind']} soup of {len(summary['kept'])} runs: val/r2_median "
        f"{summary['val']:.4f} (best ingredient {summary['best_ingredient_val']:.4f}); "
        f"wrote {args.out}"
    )
    return 0
