"""``brainencoder synth``: write a synthetic dataset with planted truth."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_seed
from .types import non_negative_int, positive_int

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``synth`` command to ``subparsers``."""
    p = subparsers.add_parser("synth", help="write a synthetic dataset with planted truth")
    p.add_argument("out", type=Path)
    p.add_argument("--subjects", type=positive_int, default=3)
    p.add_argument("--n-train", type=positive_int, default=300, help="training images of subj01")
    p.add_argument("--n-test", type=positive_int, default=50, help="test images of subj01")
    p.add_argument("--vertices", type=positive_int, default=1200, help="vertices per hemisphere")
    p.add_argument("--image-size", type=positive_int, default=425)
    p.add_argument(
        "--held-out",
        type=non_negative_int,
        default=0,
        help="extra subjects meant for 'adapt' (their own vertex subset)",
    )
    p.add_argument(
        "--categories",
        action="store_true",
        help="plant face and place images with face- and place-selective patches",
    )
    from ..data.synthetic_worlds import WORLDS

    p.add_argument(
        "--world",
        default=None,
        metavar="NAME",
        help=f"the planted world, what drives the responses: {', '.join(WORLDS.names())} "
        "(default retino; docs/recipes-worlds.md)",
    )
    p.add_argument(
        "--layout",
        choices=("challenge", "simple"),
        default="challenge",
        help="challenge: the Algonauts 2023 layout; simple: your own experiment's layout "
        "(trials.csv, responses per trial; docs/own-data.md)",
    )
    p.add_argument(
        "--repeats",
        type=positive_int,
        default=None,
        help="--layout simple: trials per image, default 3 (their mean is the challenge "
        "layout's response)",
    )
    p.add_argument(
        "--images",
        choices=("folder", "npy"),
        default=None,
        help="--layout simple: image files in images/ (default), or one images.npy array",
    )
    add_seed(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Write the dataset; print where it is and which subjects were held out."""
    from ..api.data_tools import synth
    from ..data.synthetic import SyntheticConfig

    settings = {
        "n_subjects": args.subjects,
        "n_train": args.n_train,
        "n_test": args.n_test,
        "n_vertices": args.vertices,
        "image_size": args.image_size,
        "held_out": args.held_out,
        "categories": args.categories,
        "seed": args.seed,
    }
    if args.world is not None:  # default: SyntheticConfig's world
        settings["world"] = args.world
    config = SyntheticConfig(**settings)
    out = synth(
        args.out, config=config, layout=args.layout, repeats=args.repeats, images=args.images
    )
    print(f"synthetic dataset: {out} (truth: {out / 'truth'})")
    if args.held_out:
        group = " ".join(f"subj{k + 1:02d}" for k in range(args.subjects))
        print(
            f"held out of group training: {', '.join(config.held_out_names())} "
            f"(prepare the group with --subjects {group})"
        )
    return 0
