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
        "images",
        type=Path,
        help="a folder of image files, or uint8 (N, H, W, 3) images in a .npy or an HDF5 "
        "file (NSD's nsd_stimuli.hdf5)",
    )
    add_image_source(p, "START:STOP rows of an image array")
    p.add_argument("--subject", required=True)
    add_out(p, "FILE.npz, or FILE.npy -> FILE_lh/rh.npy (written batch by batch)")
    p.add_argument("--batch-size", type=positive_int, default=64)
    add_workers(p)
    add_plugin(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Predict and write FILE.npz (with the image names or rows) or FILE_lh/rh.npy."""
    import numpy as np

    from ..data.sources import ImageArray, open_images
    from ..inference.images import predict_images, predict_to_npy
    from ..runs.load import load_model
    from ..util.fileio import atomic_path

    load_plugins(args.plugins)
    out = Path(args.out)
    check_output_file(out, (".npz", ".npy"))
    if out.suffix == ".npy":
        for hemi in ("lh", "rh"):
            check_output_file(f"{out.with_suffix('')}_{hemi}.npy")
    with open_images(args.images, args.dataset, args.rows) as images:  # checked before the model
        model = load_model(args.run_dir)
        if out.suffix == ".npy":  # streamed to disk: memory does not grow with the images
            paths = predict_to_npy(
                model,
                images,
                args.subject,
                out.with_suffix(""),
                args.batch_size,
                None,
                args.workers,
            )
            for path in paths.values():
                print(f"wrote {path} {np.load(path, mmap_mode='r').shape}")
            return 0
        if isinstance(images, ImageArray):
            labels = {"rows": np.asarray(images.rows, dtype=np.int64)}
        else:
            labels = {"names": np.array(images.names)}
        pred = predict_images(
            model, images, args.subject, batch_size=args.batch_size, workers=args.workers
        )
    with atomic_path(out, suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, lh=pred["lh"], rh=pred["rh"], **labels)
    print(f"wrote {out}: lh {pred['lh'].shape}, rh {pred['rh'].shape}, {', '.join(labels)}")
    return 0
