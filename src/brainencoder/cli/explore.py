"""``brainencoder explore``: rank images by predicted ROI response (in silico)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_data, add_image_source, add_out, add_plugin, load_plugins
from .types import positive_int

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``explore`` command to ``subparsers``."""
    p = subparsers.add_parser("explore", help="rank images by predicted ROI response (in silico)")
    p.add_argument(
        "run_dir", type=Path, help="run folder, model file, exported folder or hf:ORG/NAME (cached)"
    )
    p.add_argument(
        "images", type=Path, help="a folder of images, or a .npy / HDF5 file of uint8 images"
    )
    add_image_source(p, "START:STOP rows of an array")
    p.add_argument("--subject", required=True, help="a subject of the model, or 'all'")
    p.add_argument(
        "--roi", action="append", required=True, help="ROI name; give two for ROI1 - ROI2"
    )
    p.add_argument("--top", type=positive_int, default=8)
    p.add_argument(
        "--ensemble",
        type=Path,
        action="append",
        default=[],
        metavar="RUN",
        help="a further run: rank by the ensemble's mean prediction (repeatable)",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=None,
        metavar="LEVEL",
        help="give each ranked image its calibrated interval of this level for the ROI score "
        "(0.9; brainencoder calibrate first) and say which top ranks are separable",
    )
    p.add_argument(
        "--calibration",
        type=Path,
        default=None,
        help="the calibration file (default: the one calibrate wrote beside the first run)",
    )
    add_out(p, "output folder")
    add_data(p, "default: the run's data root (an exported folder's own ROI files)")
    add_plugin(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Rank the images; print where the ranking, the grids and the page are."""
    from ..api.experiments import explore

    load_plugins(args.plugins)
    outputs = explore(
        args.run_dir,
        args.images,
        args.subject,
        args.roi,
        args.out,
        top=args.top,
        data=args.data,
        dataset=args.dataset,
        rows=args.rows,
        ensemble=args.ensemble,
        interval=args.interval,
        calibration=args.calibration,
    )
    for name, path in outputs.items():
        print(f"  {name:<10} {path}")
    return 0
