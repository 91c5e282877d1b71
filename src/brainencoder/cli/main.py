"""Command-line interface: ``brainencoder <command> ...``.

Each command is a module of this package with ``add_parser(subparsers)``,
which declares its options, and ``run(args)``, which calls the library and
returns the exit status. This module only collects them: it builds the top
parser from :data:`COMMANDS` and dispatches. Errors derived from
:class:`~brainencoder.util.errors.BrainEncoderError` are printed without a
traceback and give exit status 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ..util.errors import BrainEncoderError
from ..util.version import __version__
from . import (
    adapt,
    baseline,
    calibrate,
    compare,
    demo,
    evaluate,
    explore,
    export,
    import_original,
    pca,
    plan,
    plot,
    predict,
    prepare,
    report,
    score,
    soup,
    submit,
    synth,
    synthesize,
    train,
    validate,
)

__all__ = ["COMMANDS", "build_parser", "main"]

logger = logging.getLogger("brainencoder")

# in the order ``brainencoder --help`` lists them
COMMANDS = (
    synth,
    validate,
    prepare,
    demo,
    pca,
    train,
    evaluate,
    plot,
    predict,
    calibrate,
    submit,
    baseline,
    report,
    import_original,
    explore,
    synthesize,
    compare,
    soup,
    score,
    adapt,
    export,
    plan,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all commands."""
    parser = argparse.ArgumentParser(
        prog="brainencoder", description="Multi-subject fMRI encoding models (Algonauts 2023)."
    )
    parser.add_argument("--version", action="version", version=f"brainencoder {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub).set_defaults(func=command.run)
    return parser


def _describe_os_error(exc: OSError) -> str:
    import errno

    where = f"{exc.filename}: " if exc.filename else ""
    hint = {
        errno.ENOSPC: "the disk is full; free some space and run the command again (files "
        "are written atomically, so nothing half-written was left)",
        errno.EROFS: "read-only file system; choose a writable output folder",
        errno.EACCES: "permission denied; choose a folder you can write to",
        errno.EDQUOT: "disk quota exceeded; free some space and run the command again",
    }.get(exc.errno or -1, exc.strerror or str(exc))
    return f"{where}{hint}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may come after options
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except BrainEncoderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # disk full, read-only folder, permissions: one line, no traceback
        print(f"error: {_describe_os_error(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(f"interrupted{': ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return 130
