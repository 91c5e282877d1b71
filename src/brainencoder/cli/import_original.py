"""``brainencoder import-original``: a checkpoint of the original GroupLin entry -> model file."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..util.ownership import check_output_file
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


def _group_space(data: Path):
    """The group space of a prepared store or a challenge-layout folder."""
    if (Path(data) / "space.npz").exists():
        from ..data.store import Store

        return Store(data).space
    from ..core.space import GroupSpace
    from ..data.layout import read_layout

    layout = read_layout(data)
    return GroupSpace.from_masks({n: s.masks for n, s in layout.subjects.items()})


def run(args: argparse.Namespace) -> int:
    """Convert the checkpoint and save the encoder; print what it holds."""
    from ..models.modelfile import save_encoder
    from ..models.original import import_original
    from ..util.errors import BrainEncoderError

    load_plugins(args.plugins)
    out = Path(args.out)
    check_output_file(out, (".safetensors",))
    if out.exists() and not args.overwrite:
        raise BrainEncoderError(f"{out} exists; pass --overwrite to replace it")
    model = import_original(
        args.checkpoint,
        _group_space(args.data),
        pca=args.pca,
        trunk=args.trunk,
        layers=layer_specs(args.layers or []) or None,
        trunk_weights=args.trunk_weights,
        img_size=args.img_size,
    )
    save_encoder(model, out, {"imported_from": Path(args.checkpoint).name})
    n = sum(p.numel() for p in model.readout.parameters() if p.requires_grad)
    print(
        f"wrote {out}: {model.config.trunk} + grouplin readout ({n / 1e6:.1f} M parameters), "
        f"subjects {model.space.subjects}, {model.space.n_vertices} group vertices"
    )
    return 0
