"""``brainencoder import-original``: a checkpoint of the original GroupLin entry -> model file."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_data, add_out, add_overwrite, add_plugin, layer_specs, load_plugins
from .types import positive_int

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``import-original`` command to ``subparsers``."""
    p = subparsers.add_parser(
        "import-original",
        help="convert a checkpoint of the original GroupLin entry into a model file",
    )
    p.add_argument("checkpoint", type=Path, help="ckpt-best.pt of algonauts23's training script")
    add_data(p, "challenge data root or store (group space)", required=True)
    p.add_argument("--pca", type=Path, default=None, help="its group_pca_d-*.pt (checked)")
    add_out(p, "model file (.safetensors)")
    p.add_argument("--trunk", default="eva02_base_patch14_224.mim_in22k")
    p.add_argument("--layers", nargs="+", default=None, help="default: blocks.[02468] blocks.10")
    p.add_argument(
        "--trunk-weights", type=Path, default=None, help="pretrained trunk file (phase 1)"
    )
    p.add_argument("--img-size", type=positive_int, default=None)
    add_overwrite(p)
    add_plugin(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Convert the checkpoint and save the encoder; print what it holds."""
    from ..api.model_tools import import_original

    load_plugins(args.plugins)
    options = {
        "trunk": args.trunk,
        "layers": layer_specs(args.layers or []) or None,
        "trunk_weights": None if args.trunk_weights is None else str(args.trunk_weights),
        "img_size": args.img_size,
    }
    model = import_original(
        args.checkpoint,
        data=args.data,
        out=args.out,
        pca=args.pca,
        model=options,
        overwrite=args.overwrite,
    )
    readout = model.model.readout
    n = sum(p.numel() for p in readout.parameters() if p.requires_grad)
    print(
        f"wrote {model.path}: {model.model.config.trunk} + grouplin readout "
        f"({n / 1e6:.1f} M parameters), subjects {model.subjects}, "
        f"{model.space.n_vertices} group vertices"
    )
    return 0
