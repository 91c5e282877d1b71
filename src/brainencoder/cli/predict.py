"""``brainencoder predict``: a subject's responses to a folder of images or an image array."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..util.ownership import check_output_file
from .options import add_image_source, add_out, add_plugin, add_workers, load_plugins
from .types import positive_int

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``predict`` command to ``subparsers``."""
    p = subparsers.add_parser(
        "predict", help="predict a subject's responses to a folder of images or an image array"
    )
    p.add_argument(
        "run_dir", type=Path, help="run folder, model file, exported folder or hf:ORG/NAME (cached)"
    )
    p.add_argument(
        "--ensemble",
        type=Path,
        action="append",
        default=[],
        metavar="RUN",
        help="a further run: predict the ensemble's mean (repeatable)",
    )
    p.add_argument(
        "images",
        type=Path,
        help="a folder of image files, or uint8 (N, H, W, 3) images in a .npy or an HDF5 "
        "file (NSD's nsd_stimuli.hdf5)",
    )
    add_image_source(p, "START:STOP rows of an image array")
    p.add_argument("--subject", required=True)
    add_out(p, "FILE.npz, or FILE.npy -> FILE_lh/rh.npy (written batch by batch)")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument(
        "--interval",
        type=float,
        default=None,
        metavar="LEVEL",
        help="also write bounds holding the measured response with this probability (0.9), "
        "calibrated by brainencoder calibrate; RUN may then be several runs (an ensemble)",
    )
    p.add_argument(
        "--calibration",
        type=Path,
        default=None,
        help="the calibration file (default: the one calibrate wrote beside the first run)",
    )
    add_workers(p)
    add_plugin(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Predict and write FILE.npz (with the image names or rows) or FILE_lh/rh.npy.

    ``FILE.npz`` (and any file with ``--interval``) is written by
    :meth:`~brainencoder.api.predictions.Prediction.save`, so ``be.load(...).predict(...)
    .save(FILE)`` writes the same bytes; ``FILE.npy`` without an interval is
    streamed batch by batch.
    """
    from ..api.model import load
    from ..data.sources import open_images

    load_plugins(args.plugins)
    out = Path(args.out)
    check_output_file(out, (".npz", ".npy"))
    if out.suffix == ".npy":
        for hemi in ("lh", "rh"):
            check_output_file(f"{out.with_suffix('')}_{hemi}.npy")
    with open_images(args.images, args.dataset, args.rows) as images:  # checked before the model
        model = load(args.run_dir, *args.ensemble)
        if out.suffix == ".npy" and args.interval is None:
            return _stream(model.model, images, args, out)
        pred = model.predict(
            images,
            args.subject,
            batch_size=args.batch_size,
            workers=args.workers,
            interval=args.interval,
            calibration=args.calibration,
        )
    files = pred.save(out)
    extra = ", ".join(pred.labels or {})
    bounds = f", {pred.level:g} interval" if pred.level is not None else ""
    print(
        f"wrote {', '.join(map(str, files))}: lh {pred.lh.shape}, rh {pred.rh.shape}{bounds}"
        + (f", {extra}" if extra and out.suffix == ".npz" else "")
    )
    return 0


def _stream(model, images, args: argparse.Namespace, out: Path) -> int:
    """FILE_lh/rh.npy written batch by batch: memory does not grow with the images."""
    import numpy as np

    from ..inference.images import predict_to_npy

    paths = predict_to_npy(
        model, images, args.subject, out.with_suffix(""), args.batch_size, None, args.workers
    )
    for path in paths.values():
        print(f"wrote {path} {np.load(path, mmap_mode='r').shape}")
    return 0
