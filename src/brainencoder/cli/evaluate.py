"""``brainencoder evaluate``: metrics of a run on a split, per subject and ROI."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_out, add_plugin, add_store, add_trust_splits, load_plugins

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``evaluate`` command to ``subparsers``."""
    p = subparsers.add_parser("evaluate", help="metrics of a run on a split, per subject and ROI")
    p.add_argument(
        "run_dir", type=Path, help="run folder, model file, exported folder or hf:ORG/NAME (cached)"
    )
    p.add_argument(
        "--split",
        default="testval",
        choices=("val", "testval", "train", "all", "test"),
        help="'test' needs held-back test responses in --noise-ceiling DIR",
    )
    add_store(p, "default: the run's store")
    p.add_argument(
        "--noise-ceiling",
        type=Path,
        default=None,
        help="folder with subjXX/{lh,rh}_noise_ceiling.npy (fractions)",
    )
    add_out(p, "output folder (default RUN/eval/SPLIT; needed for a model file)", required=False)
    add_trust_splits(p)
    add_plugin(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Evaluate; print the summary table and the challenge score."""
    from ..evaluation.evaluate import evaluate_run, summary_table
    from ..runs.hub import hub_name, resolve_source
    from ..util.errors import ConfigError

    load_plugins(args.plugins)
    if hub_name(args.run_dir) is not None and args.out is None:
        raise ConfigError(f"{args.run_dir}: pass --out DIR (the hub's cache is not written into)")
    args.run_dir = resolve_source(args.run_dir)  # hf:ORG/NAME: its cached folder
    table = evaluate_run(
        args.run_dir,
        args.split,
        args.store,
        args.noise_ceiling,
        out_dir=args.out,
        trust_splits=args.trust_splits,
    )
    print(summary_table(table))
    overall = table[(table.subject == "all") & (table.statistic == "mean")]
    score = overall[overall.metric == "score"]
    if len(score):
        positive = overall[overall.metric == "score_nc_positive"].value.iloc[0]
        print(
            f"challenge score (the devkit's: mean over every vertex): {score.value.iloc[0]:.2f}%"
            f"  [mean over vertices with noise ceiling > 0 only: {positive:.2f}%]"
        )
    out = args.out if args.out is not None else Path(args.run_dir) / "eval" / args.split
    print(f"wrote {out / 'metrics.csv'}")
    return 0
