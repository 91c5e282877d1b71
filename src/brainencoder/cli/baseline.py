"""``brainencoder baseline``: fit a ridge or devkit baseline on frozen features."""

from __future__ import annotations

import argparse

from .options import add_out, add_overwrite, add_plugin, add_store, layer_specs, load_plugins
from .types import positive_int

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``baseline`` command to ``subparsers``."""
    p = subparsers.add_parser("baseline", help="fit a ridge or devkit baseline on frozen features")
    p.add_argument("kind", choices=("ridge", "devkit"))
    add_store(p, required=True)
    add_out(p)
    p.add_argument("--features", choices=("trunk", "pixels"), default="trunk")
    p.add_argument("--trunk", default="resnet18")
    p.add_argument(
        "--layers",
        nargs="+",
        default=["layer1", "layer2", "layer3"],
        help="indices or globs, as for the encoder",
    )
    p.add_argument("--pretrained", action="store_true")
    p.add_argument("--trunk-weights", default=None)
    p.add_argument("--img-size", type=positive_int, default=112)
    p.add_argument("--pooling", choices=("mean", "grid"), default="grid")
    p.add_argument("--grid", type=positive_int, default=2)
    p.add_argument("--pixel-size", type=positive_int, default=32)
    p.add_argument("--pca-components", type=positive_int, default=None)
    p.add_argument(
        "--solver",
        default=None,
        metavar="NAME",
        help="a registered ridge solver (default: torch; devkit: ols; an unknown name lists "
        "them, those of --plugin modules included)",
    )
    add_plugin(p)
    add_overwrite(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Fit the baseline into a run folder that ``evaluate`` and ``submit`` read.

    ``--solver`` names a solver of :data:`~brainencoder.models.solvers.RIDGE_SOLVERS`,
    looked up (by :func:`~brainencoder.baselines.ridge.fit_ridge_baseline`, before
    any work) once the ``--plugin`` modules have registered theirs.
    """
    from ..api.model_tools import baseline

    load_plugins(args.plugins)
    features = {
        "kind": args.features,
        "trunk": args.trunk,
        "layers": layer_specs(args.layers),
        "pretrained": args.pretrained,
        "trunk_weights": args.trunk_weights,
        "img_size": args.img_size,
        "pooling": args.pooling,
        "grid": args.grid,
        "pixel_size": args.pixel_size,
        "pca_components": args.pca_components,
    }
    fitted = baseline(
        args.kind,
        store=args.store,
        out=args.out,
        features=features,
        solver=args.solver,
        overwrite=args.overwrite,
    )
    print(
        f"wrote {args.out} ({args.kind}, {fitted.config['solver']}); evaluate it with "
        f"'brainencoder evaluate {args.out}'"
    )
    return 0
