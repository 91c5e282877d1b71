"""``brainencoder submit``: write a challenge submission zip (several runs: ensemble)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..util.ownership import check_output_file
from .options import (
    add_data,
    add_out,
    add_plugin,
    add_store,
    add_trust_splits,
    add_workers,
    load_plugins,
)

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``submit`` command to ``subparsers``."""
    p = subparsers.add_parser(
        "submit", help="write a challenge submission zip (several runs: ensemble)"
    )
    p.add_argument(
        "run_dirs",
        type=Path,
        nargs="+",
        help="run folder, model file, exported folder or hf:ORG/NAME (cached); several: ensemble",
    )
    add_data(p, "challenge data root", required=True)
    add_out(p)
    p.add_argument(
        "--val-weights",
        action="store_true",
        help="per-vertex ensemble weights from validation accuracy",
    )
    add_store(p, "store for --val-weights")
    add_trust_splits(p)
    p.add_argument(
        "--truth",
        type=Path,
        default=None,
        help="folder with held-back test responses and noise ceilings to score",
    )
    add_workers(p)
    add_plugin(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Predict every subject's test images, write the zip, score it if ``--truth``."""
    from ..data.layout import read_layout
    from ..evaluation.submission import (
        check_run_vertices,
        check_test_images,
        score_submission,
        write_submission,
    )
    from ..inference.images import ensemble_predict
    from ..runs.hub import resolve_source
    from ..runs.load import load_model

    load_plugins(args.plugins)
    args.run_dirs = [resolve_source(r) for r in args.run_dirs]  # hf:ORG/NAME: its folder
    check_output_file(args.out, (".zip",))
    layout = read_layout(args.data)
    check_test_images(layout)
    models = [load_model(r) for r in args.run_dirs]
    for model, run_dir in zip(models, args.run_dirs):  # same counts are not the same vertices
        check_run_vertices(model.space, layout, run_dir)
    weights = None
    if args.val_weights:
        from ..runs.ensemble import val_weights

        weights = val_weights(models, args.run_dirs, args.store, trust_splits=args.trust_splits)
    preds = {}
    for name, subj in layout.subjects.items():
        w = None if weights is None else [wm[name] for wm in weights]
        preds[name] = ensemble_predict(models, subj.test_images, name, w, workers=args.workers)
    write_submission(preds, layout, args.out)
    print(f"wrote {args.out} ({len(preds)} subjects, {len(models)} model(s))")
    if args.truth:
        scores = score_submission(args.out, args.truth, layout)
        print("challenge score vs truth: " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()))
    return 0
