"""``brainencoder plan``: which images of a pool to show a new subject (for ``adapt``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_out, add_overwrite, add_plugin, add_seed, add_store, load_plugins
from .types import positive_int

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``plan`` command to ``subparsers``."""
    from ..experiments.plan_select import SELECTORS

    p = subparsers.add_parser(
        "plan", help="pick the images of a pool that teach adapt most for a new subject"
    )
    p.add_argument(
        "run_dirs",
        type=Path,
        nargs="+",
        help="run folder, model file, exported folder or hf:ORG/NAME (cached); several: ensemble",
    )
    p.add_argument(
        "--pool", type=Path, required=True, help="a folder of images, or a .npy / HDF5 file"
    )
    p.add_argument("--n", type=positive_int, default=100, help="how many images to pick")
    p.add_argument("--method", choices=SELECTORS, default=SELECTORS[0], help="the selection rule")
    add_seed(p)
    add_store(p, "with --subject: keep only the images of that subject's train split")
    p.add_argument("--subject", default=None, help="the new subject in --store")
    add_out(
        p,
        "a .txt file: one image file name per line (what adapt --images reads); "
        "its picture is written beside it (list.txt -> list.png)",
    )
    add_overwrite(p, "replace --out if it exists")
    add_plugin(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Pick the images; write the list; print where it is."""
    from ..api.planning import plan
    from ..experiments.plan_figure import figure_path
    from ..util.errors import ConfigError

    load_plugins(args.plugins)
    if (args.store is None) != (args.subject is None):
        raise ConfigError("give both --store and --subject (the subject's train split)")
    names = plan(
        args.run_dirs,
        args.pool,
        n=args.n,
        out=args.out,
        method=args.method,
        seed=args.seed,
        train_split=None if args.store is None else (args.store, args.subject),
        overwrite=args.overwrite,
    )
    print(f"wrote {args.out} ({len(names)} images of {args.pool}, method {args.method})")
    print(f"  where they lie in the pool, and the first of them: {figure_path(args.out)}")
    return 0
