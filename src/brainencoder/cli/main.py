"""Command-line interface: ``brainencoder <command> ...``.

Each command is a small function that parses nothing itself: argparse builds
the arguments, the function calls the library. Errors derived from
:class:`~brainencoder.util.errors.BrainEncoderError` are printed without a
traceback and give exit status 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from ..util.errors import BrainEncoderError
from ..util.version import __version__
from .types import non_negative_int, positive_int

__all__ = ["main"]

logger = logging.getLogger("brainencoder")


# ----------------------------------------------------------------------------- commands


def _cmd_synth(args: argparse.Namespace) -> int:
    from ..data.synthetic import SyntheticConfig, make_synthetic

    config = SyntheticConfig(
        n_subjects=args.subjects,
        n_train=args.n_train,
        n_test=args.n_test,
        n_vertices=args.vertices,
        image_size=args.image_size,
        held_out=args.held_out,
        categories=args.categories,
        seed=args.seed,
    )
    out = make_synthetic(args.out, config)
    print(f"synthetic dataset: {out} (truth: {out / 'truth'})")
    if args.held_out:
        group = " ".join(f"subj{k + 1:02d}" for k in range(args.subjects))
        print(
            f"held out of group training: {', '.join(config.held_out_names())} "
            f"(prepare the group with --subjects {group})"
        )
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..data.validate import validate_dataset

    def progress(it, total):
        return tqdm(it, total=total, unit="img", desc="check images", disable=None)

    report = validate_dataset(args.data_root, check_images=not args.skip_images, progress=progress)
    if report.layout is not None:
        print(report.table())
    for problem in report.problems:
        print(problem)
    n_block = sum(p.blocking for p in report.problems)
    print(
        f"{len(report.problems)} problem(s), {n_block} blocking training"
        if report.problems
        else "no problems found"
    )
    return 0 if report.ok else 1


def _cmd_prepare(args: argparse.Namespace) -> int:
    from ..data.prepare import prepare_store

    store = prepare_store(
        args.data_root,
        args.store,
        image_size=args.image_size,
        fmri_dtype=args.fmri_dtype,
        nan_policy=args.nan_policy,
        split_seed=args.split_seed,
        split_mode=args.split_mode,
        subjects=args.subjects,
        workers=args.workers,
        overwrite=args.overwrite,
    )
    print(store.summary())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    outputs = run_demo(args.out, seed=args.seed)
    print("[demo] outputs:")
    for name, path in outputs.items():
        print(f"  {name:<12} {path}")
    return 0


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all commands."""
    parser = argparse.ArgumentParser(
        prog="brainencoder", description="Multi-subject fMRI encoding models (Algonauts 2023)."
    )
    parser.add_argument("--version", action="version", version=f"brainencoder {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="write a synthetic dataset with planted truth")
    p.add_argument("out", type=Path)
    p.add_argument("--subjects", type=positive_int, default=3)
    p.add_argument("--n-train", type=positive_int, default=300, help="training images of subj01")
    p.add_argument("--n-test", type=positive_int, default=50, help="test images of subj01")
    p.add_argument("--vertices", type=positive_int, default=1200, help="vertices per hemisphere")
    p.add_argument("--image-size", type=positive_int, default=425)
    p.add_argument(
        "--held-out",
        type=non_negative_int,
        default=0,
        help="extra subjects meant for 'adapt' (their own vertex subset)",
    )
    p.add_argument(
        "--categories",
        action="store_true",
        help="plant face and place images with face- and place-selective patches",
    )
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("validate", help="check a challenge-layout dataset")
    p.add_argument("data_root", type=Path)
    p.add_argument("--skip-images", action="store_true", help="do not decode-check images")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("prepare", help="decode images and copy fMRI into a store")
    p.add_argument("data_root", type=Path)
    p.add_argument("store", type=Path)
    p.add_argument("--image-size", type=positive_int, default=256)
    p.add_argument("--fmri-dtype", choices=("float32", "float16"), default="float32")
    p.add_argument("--nan-policy", choices=("error", "zero"), default="error")
    p.add_argument("--split-seed", type=non_negative_int, default=0)
    p.add_argument(
        "--split-mode",
        choices=("image", "subject"),
        default="image",
        help="image: a shared image is in one split for all subjects (default); "
        "subject: per-subject splits, as the original entry",
    )
    p.add_argument("--subjects", nargs="+", default=None, help="a subset (default: all)")
    p.add_argument("--workers", type=positive_int, default=None)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("demo", help="run the whole pipeline on a synthetic dataset")
    p.add_argument("out", type=Path, nargs="?", default=Path("demo-output"))
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.set_defaults(func=_cmd_demo)

    from .experiment_commands import add_experiment_commands
    from .model_commands import add_model_commands

    add_model_commands(sub)
    add_experiment_commands(sub)
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
