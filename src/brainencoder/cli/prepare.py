"""``brainencoder prepare``: decode images and copy fMRI into a store."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_overwrite
from .types import non_negative_int, positive_int

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``prepare`` command to ``subparsers``."""
    p = subparsers.add_parser("prepare", help="decode images and copy fMRI into a store")
    p.add_argument(
        "data_root",
        type=Path,
        help="the challenge's data folder, or your own experiment's (docs/own-data.md)",
    )
    p.add_argument("store", type=Path)
    p.add_argument("--image-size", type=positive_int, default=256)
    p.add_argument("--fmri-dtype", choices=("float32", "float16"), default="float32")
    p.add_argument("--nan-policy", choices=("error", "zero"), default="error")
    p.add_argument("--split-seed", type=non_negative_int, default=0)
    p.add_argument(
        "--split-mode",
        choices=("image", "subject"),
        default="image",
        help="image: a shared image is in one split for all subjects (default); "
        "subject: per-subject splits, as the original entry",
    )
    p.add_argument("--subjects", nargs="+", default=None, help="a subset (default: all)")
    p.add_argument("--workers", type=positive_int, default=None)
    p.add_argument(
        "--noise-ceiling",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="your own experiment's layout: estimate noise ceilings from repeated trials "
        "(default: when every subject has repeats; --noise-ceiling makes it required)",
    )
    add_overwrite(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Write the store; print its summary."""
    from ..data.prepare import PrepareOptions, prepare_store

    options = PrepareOptions(
        image_size=args.image_size,
        fmri_dtype=args.fmri_dtype,
        nan_policy=args.nan_policy,
        split_seed=args.split_seed,
        split_mode=args.split_mode,
        noise_ceiling=args.noise_ceiling,
    )
    store = prepare_store(
        args.data_root,
        args.store,
        options,
        subjects=args.subjects,
        workers=args.workers,
        overwrite=args.overwrite,
    )
    print(store.summary())
    source = store.manifest["source"]
    if source.get("layout") == "simple":
        print(f"converted data (for --data): {source['root']}")
        print(f"test responses and noise ceilings (for --noise-ceiling): {source['truth']}")
    return 0
