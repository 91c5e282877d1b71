"""``brainencoder export``: runs as a self-contained folder to upload to a model hub."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_data, add_overwrite, add_plugin, load_plugins

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``export`` command to ``subparsers``."""
    p = subparsers.add_parser(
        "export", help="write runs as a self-contained folder for a model hub (model card)"
    )
    p.add_argument(
        "runs",
        type=Path,
        nargs="+",
        metavar="RUN",
        help="finished run folder, model file or exported folder; several: their ensemble",
    )
    p.add_argument("out", type=Path, metavar="DIR", help="the folder to write")
    add_data(p, "challenge data root with the subjects' ROI files (default: the runs' data)")
    p.add_argument("--repo-id", default=None, metavar="ORG/NAME", help="hub name (the card)")
    p.add_argument("--license", default="other", help="the card's license id (default: other)")
    p.add_argument(
        "--dataset",
        action="append",
        default=None,
        metavar="NAME",
        help="the card's datasets (repeatable; default: algonauts-2023)",
    )
    p.add_argument("--tag", action="append", default=[], metavar="TAG", help="extra card tag")
    add_overwrite(p, "replace DIR if brainencoder exported it")
    add_plugin(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Export; print where the folder is and how to load it."""
    from ..api.share import export

    load_plugins(args.plugins)
    out = export(
        args.runs,
        args.out,
        data=args.data,
        repo_id=args.repo_id,
        license=args.license,
        datasets=args.dataset if args.dataset else ("algonauts-2023",),
        tags=args.tag,
        overwrite=args.overwrite,
    )
    name = args.repo_id or "ORG/NAME"
    print(f"wrote {out}: upload it as it is ('hf upload {name} {out}'), then load it with")
    print(
        f"  be.load('hf:{name}') once downloaded ('hf download {name}'), or be.load({str(out)!r})"
    )
    return 0
