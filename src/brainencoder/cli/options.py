"""Options and helpers shared by the command modules.

Each ``add_*`` function adds one option (or a pair that always goes together)
to a command's parser, so that a name, type and default are written once.
Help texts that differ between commands are passed in.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from .types import non_negative_int, row_slice

__all__ = [
    "add_data",
    "add_image_source",
    "add_out",
    "add_overrides",
    "add_overwrite",
    "add_plugin",
    "add_seed",
    "add_store",
    "add_trust_splits",
    "add_workers",
    "layer_specs",
    "load_plugins",
]


def add_data(parser: argparse.ArgumentParser, help: str, required: bool = False) -> None:
    """``--data DIR``: a challenge data root (or a store, where the command says so)."""
    parser.add_argument("--data", type=Path, required=required, default=None, help=help)


def add_store(
    parser: argparse.ArgumentParser, help: str | None = None, required: bool = False
) -> None:
    """``--store DIR``: a prepared store."""
    parser.add_argument("--store", type=Path, required=required, default=None, help=help)


def add_out(
    parser: argparse.ArgumentParser, help: str | None = None, required: bool = True
) -> None:
    """``--out PATH``: where the command writes."""
    parser.add_argument("--out", type=Path, required=required, default=None, help=help)


def add_overwrite(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--overwrite``: replace an output that exists (a folder only if brainencoder wrote it)."""
    parser.add_argument("--overwrite", action="store_true", help=help)


def add_seed(parser: argparse.ArgumentParser) -> None:
    """``--seed N`` (default 0)."""
    parser.add_argument("--seed", type=non_negative_int, default=0)


def add_overrides(parser: argparse.ArgumentParser, help: str) -> None:
    """Positional ``key=value`` settings; ``main`` also collects those given after options."""
    parser.add_argument("overrides", nargs="*", help=help)


def add_trust_splits(parser: argparse.ArgumentParser) -> None:
    """``--trust-splits``: score models that record no training splits on val / testval."""
    parser.add_argument(
        "--trust-splits",
        action="store_true",
        help="score models that record no training splits (older or foreign model files) on "
        "val or testval anyway; a model that records training on that split is still refused",
    )


def add_workers(parser: argparse.ArgumentParser) -> None:
    """``--workers N``: threads decoding images while a model predicts."""
    parser.add_argument(
        "--workers",
        type=non_negative_int,
        default=None,
        help="threads decoding images while the model runs (default: one per CPU; 0: none)",
    )


def add_image_source(parser: argparse.ArgumentParser, rows_help: str) -> None:
    """``--dataset`` and ``--rows``: which images of an HDF5 or .npy image array."""
    parser.add_argument(
        "--dataset", default=None, help="HDF5 dataset (default: the only image one)"
    )
    parser.add_argument("--rows", type=row_slice, default=None, help=rows_help)


def add_plugin(parser: argparse.ArgumentParser) -> None:
    """``--plugin MODULE`` (repeatable): modules imported before a model is built or loaded."""
    parser.add_argument(
        "--plugin",
        dest="plugins",
        action="append",
        metavar="MODULE",
        default=None,
        help="import MODULE first, so that it can register readouts or losses (repeatable)",
    )


def load_plugins(names: Sequence[str] | None) -> None:
    """Import the ``--plugin`` modules (``None``: none given); a bad one is a ConfigError."""
    from ..util.plugins import load_plugins as load

    load(list(names or []))


def layer_specs(values: Sequence[str]) -> list[int | str]:
    """``--layers`` values: integers as indices, anything else as a name or glob."""
    return [int(x) if x.lstrip("-").isdigit() else x for x in values]
