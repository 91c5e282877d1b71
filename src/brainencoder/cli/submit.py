"""``brainencoder submit``: write a challenge submission zip (several runs: ensemble)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import (
    add_data,
    add_out,
    add_plugin,
    add_store,
    add_trust_splits,
    add_workers,
    load_plugins,
)

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``submit`` command to ``subparsers``."""
    p = subparsers.add_parser(
        "submit", help="write a challenge submission zip (several runs: ensemble)"
    )
    p.add_argument(
        "run_dirs",
        type=Path,
        nargs="+",
        help="run folder, model file, exported folder or hf:ORG/NAME (cached); several: ensemble",
    )
    add_data(p, "challenge data root", required=True)
    add_out(p)
    p.add_argument(
        "--val-weights",
        nargs="?",
        const="vertex",
        default=None,
        choices=("vertex", "roi"),
        help="ensemble weights from validation accuracy: per vertex (the default when given "
        "alone) or averaged per ROI ('--val-weights roi')",
    )
    add_store(p, "store for --val-weights")
    add_trust_splits(p)
    p.add_argument(
        "--truth",
        type=Path,
        default=None,
        help="folder with held-back test responses and noise ceilings to score",
    )
    add_workers(p)
    add_plugin(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Predict every subject's test images, write the zip, score it if ``--truth``."""
    from ..api.submission import submit

    load_plugins(args.plugins)
    result = submit(
        args.run_dirs,
        data=args.data,
        out=args.out,
        store=args.store,
        val_weights=args.val_weights or False,
        trust_splits=args.trust_splits,
        truth=args.truth,
        workers=args.workers,
    )
    print(f"wrote {result.path} ({len(result.subjects)} subjects, {result.n_models} model(s))")
    if result.scores is not None:
        scores = ", ".join(f"{k} {v:.2f}" for k, v in result.scores.items())
        print(f"challenge score vs truth: {scores}")
    return 0
