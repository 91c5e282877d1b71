"""Commands that need a model: pca, train, evaluate, predict, submit, plot, report, baseline."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..util.ownership import check_output_file
from .types import non_negative_int, positive_int, row_slice

__all__ = ["add_model_commands"]


def _resolve_config(name: str) -> Path | None:
    """A YAML path, or the name of a packaged config (``phase1``, ``demo``...)."""
    if name in ("", "none"):
        return None
    path = Path(name)
    if path.exists():
        return path
    packaged = Path(__file__).parents[1] / "configs" / f"{name.removesuffix('.yaml')}.yaml"
    if packaged.exists():
        return packaged
    from ..util.errors import ConfigError

    available = sorted(p.stem for p in packaged.parent.glob("*.yaml"))
    raise ConfigError(f"config {name!r} is neither a file nor a packaged config ({available})")


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


def _cmd_pca(args: argparse.Namespace) -> int:
    from ..data.store import Store
    from ..models.pca import fit_group_pca

    check_output_file(args.out)
    pca = fit_group_pca(Store(args.store), args.components, seed=args.seed)
    pca.save(args.out)
    ratio = pca.explained_variance.sum()
    print(
        f"wrote {args.out}: {pca.components.shape[0]} components x "
        f"{pca.components.shape[1]} vertices from {pca.n_samples} rows "
        f"(explained variance sum {ratio:.1f})"
    )
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from ..train.config import load_config
    from ..train.loop import train

    config = load_config(_resolve_config(args.config), args.overrides)
    summary = train(config, args.store, args.out, resume=args.resume, overwrite=args.overwrite)
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ..evaluation.evaluate import evaluate_run, summary_table

    table = evaluate_run(args.run_dir, args.split, args.store, args.noise_ceiling)
    print(summary_table(table))
    overall = table[(table.subject == "all") & (table.statistic == "mean")]
    score = overall[overall.metric == "score"]
    if len(score):
        positive = overall[overall.metric == "score_nc_positive"].value.iloc[0]
        print(
            f"challenge score (the devkit's: mean over every vertex): {score.value.iloc[0]:.2f}%"
            f"  [mean over vertices with noise ceiling > 0 only: {positive:.2f}%]"
        )
    print(f"wrote {Path(args.run_dir) / 'eval' / args.split / 'metrics.csv'}")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from ..evaluation.figures import plot_run

    sphere = None
    if args.fsaverage_surf:
        import nibabel.freesurfer as fsio

        from ..util.errors import DataError

        sphere = {}
        for h in ("lh", "rh"):
            path = Path(args.fsaverage_surf) / f"{h}.sphere"
            try:
                sphere[h] = fsio.read_geometry(str(path))[0]
            except (OSError, ValueError) as exc:
                raise DataError(
                    f"{path}: cannot read the fsaverage sphere ({exc}); pass "
                    "FreeSurfer's subjects/fsaverage/surf folder"
                ) from None
    for path in plot_run(args.run_dir, args.split, args.metric, sphere):
        print(path)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from ..data.sources import ImageArray, open_images
    from ..inference.images import predict_images, predict_to_npy
    from ..runs.load import load_model
    from ..util.fileio import atomic_path

    out = Path(args.out)
    check_output_file(out, (".npz", ".npy"))
    if out.suffix == ".npy":
        for hemi in ("lh", "rh"):
            check_output_file(f"{out.with_suffix('')}_{hemi}.npy")
    with open_images(args.images, args.dataset, args.rows) as images:  # checked before the model
        model = load_model(args.run_dir)
        if out.suffix == ".npy":  # streamed to disk: memory does not grow with the images
            paths = predict_to_npy(
                model,
                images,
                args.subject,
                out.with_suffix(""),
                args.batch_size,
                None,
                args.workers,
            )
            for path in paths.values():
                print(f"wrote {path} {np.load(path, mmap_mode='r').shape}")
            return 0
        if isinstance(images, ImageArray):
            labels = {"rows": np.asarray(images.rows, dtype=np.int64)}
        else:
            labels = {"names": np.array(images.names)}
        pred = predict_images(
            model, images, args.subject, batch_size=args.batch_size, workers=args.workers
        )
    with atomic_path(out, suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, lh=pred["lh"], rh=pred["rh"], **labels)
    print(f"wrote {out}: lh {pred['lh'].shape}, rh {pred['rh'].shape}, {', '.join(labels)}")
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from ..data.layout import read_layout
    from ..evaluation.submission import check_test_images, score_submission, write_submission
    from ..inference.images import ensemble_predict
    from ..runs.load import load_model

    check_output_file(args.out, (".zip",))
    layout = read_layout(args.data)
    check_test_images(layout)
    models = [load_model(r) for r in args.run_dirs]
    weights = None
    if args.val_weights:
        from ..runs.ensemble import val_weights

        weights = val_weights(models, args.run_dirs, args.store)
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


def _cmd_baseline(args: argparse.Namespace) -> int:
    from ..baselines.ridge import FeatureSpec, fit_ridge_baseline
    from ..data.store import Store

    store = Store(args.store)
    layers = [int(x) if x.lstrip("-").isdigit() else x for x in args.layers]
    trunk = {
        "trunk": args.trunk,
        "pretrained": args.pretrained,
        "trunk_weights": args.trunk_weights,
        "img_size": args.img_size,
    }
    if args.kind == "devkit":  # the Algonauts 2023 tutorial: PCA 100 of one layer + OLS
        spec = FeatureSpec(
            kind="trunk",
            layers=layers[-1:],
            pooling="mean",
            pca_components=args.pca_components or 100,
            **trunk,
        )
        solver = "ols"
    else:
        spec = FeatureSpec(
            kind=args.features,
            layers=layers,
            pooling=args.pooling,
            grid=args.grid,
            pixel_size=args.pixel_size,
            pca_components=args.pca_components,
            **trunk,
        )
        solver = args.solver
    fit_ridge_baseline(store, args.out, spec, solver=solver, overwrite=args.overwrite)
    print(
        f"wrote {args.out} ({args.kind}, {solver}); evaluate it with "
        f"'brainencoder evaluate {args.out}'"
    )
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ..evaluation.report import write_report

    check_output_file(args.out, (".html", ".htm"))
    print(write_report(args.run_dir, args.out))
    return 0


def add_model_commands(sub: argparse._SubParsersAction) -> None:
    """Register the model commands on the subparsers ``sub``."""
    p = sub.add_parser("pca", help="fit the group PCA of a store's training fMRI")
    p.add_argument("store", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--components", type=_components, default=2048, help="number of components or 'auto'"
    )
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.set_defaults(func=_cmd_pca)

    p = sub.add_parser("train", help="train an encoder (phase 1 or 2)")
    p.add_argument("config", help="YAML file or packaged config name (phase1, phase2, demo)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. lr=1e-3")
    p.add_argument("--store", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="metrics of a run on a split, per subject and ROI")
    p.add_argument("run_dir", type=Path)
    p.add_argument(
        "--split",
        default="testval",
        choices=("val", "testval", "train", "all", "test"),
        help="'test' needs held-back test responses in --noise-ceiling DIR",
    )
    p.add_argument("--store", type=Path, default=None, help="default: the run's store")
    p.add_argument(
        "--noise-ceiling",
        type=Path,
        default=None,
        help="folder with subjXX/{lh,rh}_noise_ceiling.npy (fractions)",
    )
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("plot", help="cortical maps, ROI bars and learning curves of a run")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--split", default="testval")
    p.add_argument(
        "--metric",
        action="append",
        choices=("score", "pearson", "r2"),
        help="repeatable; default: pearson, and score when noise ceilings were given",
    )
    p.add_argument(
        "--fsaverage-surf",
        type=Path,
        default=None,
        help="FreeSurfer fsaverage/surf folder (lh.sphere, rh.sphere) to place "
        "every vertex on fsaverage5; default: the fsaverage5 subset",
    )
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser(
        "predict", help="predict a subject's responses to a folder of images or an image array"
    )
    p.add_argument("run_dir", type=Path, help="run directory or model file")
    p.add_argument(
        "images",
        type=Path,
        help="a folder of image files, or uint8 (N, H, W, 3) images in a .npy or an HDF5 "
        "file (NSD's nsd_stimuli.hdf5)",
    )
    p.add_argument("--dataset", default=None, help="HDF5 dataset (default: the only image one)")
    p.add_argument("--rows", type=row_slice, default=None, help="START:STOP rows of an image array")
    p.add_argument("--subject", required=True)
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="FILE.npz, or FILE.npy -> FILE_lh/rh.npy (written batch by batch)",
    )
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument(
        "--workers",
        type=non_negative_int,
        default=None,
        help="threads decoding images while the model runs (default: one per CPU; 0: none)",
    )
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("submit", help="write a challenge submission zip (several runs: ensemble)")
    p.add_argument("run_dirs", type=Path, nargs="+")
    p.add_argument("--data", type=Path, required=True, help="challenge data root")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--val-weights",
        action="store_true",
        help="per-vertex ensemble weights from validation accuracy",
    )
    p.add_argument("--store", type=Path, default=None, help="store for --val-weights")
    p.add_argument(
        "--truth",
        type=Path,
        default=None,
        help="folder with held-back test responses and noise ceilings to score",
    )
    p.add_argument(
        "--workers",
        type=non_negative_int,
        default=None,
        help="threads decoding images while the model runs (default: one per CPU; 0: none)",
    )
    p.set_defaults(func=_cmd_submit)

    p = sub.add_parser("baseline", help="fit a ridge or devkit baseline on frozen features")
    p.add_argument("kind", choices=("ridge", "devkit"))
    p.add_argument("--store", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
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
    p.add_argument("--solver", choices=("torch", "himalaya", "sklearn"), default="torch")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_baseline)

    p = sub.add_parser("report", help="one self-contained HTML page of a run")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, default=None, help="default: RUN_DIR/report.html")
    p.set_defaults(func=_cmd_report)
