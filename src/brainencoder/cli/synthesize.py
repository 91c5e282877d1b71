"""``brainencoder synthesize``: images made for a region by gradient ascent (in silico)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..experiments.synthesize_options import AscentOptions
from .options import add_data, add_out, add_plugin, add_seed, load_plugins
from .types import non_negative_int, positive_int

__all__ = ["add_parser", "run"]


def _non_negative_float(text: str) -> float:
    """argparse type: a number >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0; got {text!r}")
    return value


def _positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0; got {text!r}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``synthesize`` command to ``subparsers``."""
    p = subparsers.add_parser(
        "synthesize", help="make images that drive a region (gradient ascent, in silico)"
    )
    p.add_argument(
        "runs",
        type=Path,
        nargs="+",
        metavar="RUN",
        help="encoder runs (run folders, model files, exported folders); several: an ensemble "
        "whose members check the images the others made",
    )
    p.add_argument("--subject", required=True, help="a subject of the models")
    p.add_argument("--roi", required=True, help="the ROI whose mean predicted response to raise")
    p.add_argument("--against", default=None, help="a second ROI: raise --roi minus this one")
    p.add_argument("--n", type=positive_int, default=8, help="images to make (default 8)")
    p.add_argument(
        "--pool",
        type=Path,
        default=None,
        help="natural images (folder, .npy or HDF5): keep an image only if the member that did "
        "not make it predicts it above the pool's best",
    )
    d = AscentOptions()  # the defaults live in one place
    p.add_argument("--steps", type=positive_int, default=d.steps, help=f"Adam steps ({d.steps})")
    p.add_argument("--lr", type=_positive_float, default=d.lr, help=f"Adam's rate ({d.lr})")
    p.add_argument("--jitter", type=non_negative_int, default=d.jitter, help="jitter (pixels)")
    p.add_argument("--blur", type=_non_negative_float, default=d.blur, help="blur prior (sigma)")
    p.add_argument("--tv", type=_non_negative_float, default=d.tv, help="total-variation weight")
    p.add_argument(
        "--decay",
        type=_non_negative_float,
        default=d.decay,
        help=f"spectrum ~ 1 / frequency ** decay: larger, smoother images ({d.decay})",
    )
    add_seed(p)
    add_out(p, "output folder (the images, responses.npy, the page)")
    add_data(p, "default: the first run's data root (an exported folder's own ROI files)")
    add_plugin(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Make the images; print where they and the page are."""
    from ..api.insilico import synthesize

    load_plugins(args.plugins)
    settings = {
        k: getattr(args, k) for k in ("steps", "lr", "jitter", "blur", "tv", "decay", "seed")
    }
    outputs = synthesize(
        args.runs,
        subject=args.subject,
        rois=[args.roi] if args.against is None else [args.roi, args.against],
        out=args.out,
        n=args.n,
        pool=args.pool,
        data=args.data,
        options=settings,
    )
    for name, path in outputs.items():
        print(f"  {name:<10} {path}")
    return 0
