"""``brainencoder score``: the challenge score of any submission zip."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_data

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``score`` command to ``subparsers``."""
    p = subparsers.add_parser("score", help="the challenge score of any submission zip")
    p.add_argument("submission", type=Path)
    p.add_argument(
        "--truth",
        type=Path,
        required=True,
        help="folder with subjXX/{lh,rh}_test_fmri.npy and {lh,rh}_noise_ceiling.npy",
    )
    add_data(p, "challenge data root (checks shapes)")
    return p


def run(args: argparse.Namespace) -> int:
    """Score the zip; print per-subject and overall scores."""
    from ..data.layout import read_layout
    from ..evaluation.submission import score_submission

    layout = read_layout(args.data) if args.data is not None else None
    scores = score_submission(args.submission, args.truth, layout)
    for key, value in scores.items():
        if key.startswith("subj"):
            print(f"  {key}: {value:.2f}%")
    print(f"challenge score (the devkit's: mean over every vertex): {scores['all']:.2f}%")
    print(f"  median over vertices: {scores['median']:.2f}%")
    print(f"  mean over vertices with noise ceiling > 0 only: {scores['all_nc_positive']:.2f}%")
    return 0
