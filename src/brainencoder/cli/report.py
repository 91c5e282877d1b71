"""``brainencoder report``: one self-contained HTML page of a run."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_out, add_plugin, load_plugins

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``report`` command to ``subparsers``."""
    p = subparsers.add_parser("report", help="one self-contained HTML page of a run")
    p.add_argument("run_dir", type=Path)
    add_out(p, "default: RUN_DIR/report.html", required=False)
    add_plugin(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Write the page; print its path."""
    from ..api.outputs import report

    load_plugins(args.plugins)
    print(report(args.run_dir, out=args.out))
    return 0
