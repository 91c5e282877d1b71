"""``brainencoder adapt``: fit a new subject to a trained model from a few hundred images."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import (
    add_data,
    add_out,
    add_overrides,
    add_overwrite,
    add_plugin,
    add_seed,
    load_plugins,
)
from .types import non_negative_int

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``adapt`` command to ``subparsers``."""
    p = subparsers.add_parser(
        "adapt", help="fit a new subject to a trained model from a few hundred images"
    )
    p.add_argument(
        "run_dir",
        type=Path,
        help="trained run folder, model file, exported folder or hf:ORG/NAME (cached)",
    )
    add_overrides(p, "key=value settings, e.g. epochs=30 lr=3e-3")
    add_data(p, "challenge data root or store", required=True)
    p.add_argument("--subject", required=True, help="the new subject, e.g. subj04")
    add_out(p, "new run folder")
    chosen = p.add_mutually_exclusive_group()
    chosen.add_argument(
        "--n-images",
        type=non_negative_int,
        default=None,
        help="train on a seeded random N of its train-split images (default: all; 0: none, "
        "the zero-shot model)",
    )
    chosen.add_argument(
        "--images",
        type=Path,
        default=None,
        metavar="LIST",
        help="train on exactly the images this file names, one file name per line "
        "(e.g. from 'brainencoder plan')",
    )
    add_seed(p)
    add_overwrite(p, "replace the run in --out")
    p.add_argument(
        "--overwrite-subject", action="store_true", help="replace the model's subject of that name"
    )
    add_plugin(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Adapt; print the summary as JSON and where the new run is."""
    import json

    from ..experiments.adapt import Overwrite, adapt, load_adapt_config, scores_line

    load_plugins(args.plugins)
    summary = adapt(
        args.run_dir,
        args.data,
        args.subject,
        args.out,
        n_images=args.n_images if args.images is None else args.images,
        seed=args.seed,
        config=load_adapt_config(args.overrides),
        overwrite=Overwrite(args.overwrite, args.overwrite_subject),
    )
    print(json.dumps(summary, indent=2))
    line = scores_line(summary)
    if line:
        print(line)
    print(f"wrote {args.out}; evaluate it with 'brainencoder evaluate {args.out}'")
    return 0
