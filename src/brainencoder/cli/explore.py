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
    add_out(p, "output folder")
    add_data(p, "default: the run's data root (an exported folder's own ROI files)")
    add_plugin(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Rank the images; print where the ranking, the grids and the page are."""
    from ..experiments.explore import ArrayRows, explore

    load_plugins(args.plugins)
    outputs = explore(
        args.run_dir,
        args.images,
        args.subject,
        args.roi,
        args.out,
        args.top,
        args.data,
        ArrayRows(args.dataset, args.rows),
    )
    for name, path in outputs.items():
        print(f"  {name:<10} {path}")
    return 0
