"""``brainencoder pca``: fit the group PCA of a store's training fMRI."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_out, add_seed

__all__ = ["add_parser", "run"]


def _components(text: str) -> int | str:
    """argparse type: a positive int or 'auto'."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of components or 'auto'; got {text!r}"
        ) from None


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``pca`` command to ``subparsers``."""
    p = subparsers.add_parser("pca", help="fit the group PCA of a store's training fMRI")
    p.add_argument("store", type=Path)
    add_out(p)
    p.add_argument(
        "--components", type=_components, default=2048, help="number of components or 'auto'"
    )
    add_seed(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Fit and save the PCA; print its size and explained variance."""
    from ..api.data_tools import pca as fit_pca

    pca = fit_pca(args.store, args.out, components=args.components, seed=args.seed)
    ratio = pca.explained_variance.sum()
    print(
        f"wrote {args.out}: {pca.components.shape[0]} components x "
        f"{pca.components.shape[1]} vertices from {pca.n_samples} rows "
        f"(explained variance sum {ratio:.1f})"
    )
    return 0
