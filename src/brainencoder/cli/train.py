"""``brainencoder train``: train an encoder (phase 1 or 2)."""

from __future__ import annotations

import argparse

from .options import add_out, add_overrides, add_overwrite, add_plugin, add_store, load_plugins

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``train`` command to ``subparsers``."""
    p = subparsers.add_parser("train", help="train an encoder (phase 1 or 2)")
    p.add_argument("config", help="YAML file or packaged config name (phase1, phase2, demo)")
    add_overrides(p, "key=value overrides, e.g. lr=1e-3")
    add_store(p, required=True)
    add_out(p, "run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    add_overwrite(p, "replace the run in --out")
    add_plugin(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Train; print the run's summary as JSON."""
    import json

    from ..training.config import load_config, resolve_config
    from ..training.loop import train

    load_plugins(args.plugins)
    config = load_config(resolve_config(args.config), args.overrides)
    summary = train(config, args.store, args.out, resume=args.resume, overwrite=args.overwrite)
    print(json.dumps(summary, indent=2))
    return 0
