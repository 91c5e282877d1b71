"""Commands on trained models beyond training: adapt, explore, compare, soup, score, import."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..util.ownership import check_output_file
from .types import non_negative_int, positive_int, row_slice

__all__ = ["add_experiment_commands"]


def _cmd_import_original(args: argparse.Namespace) -> int:
    from ..models.modelfile import save_encoder
    from ..models.original import import_original
    from ..util.errors import BrainEncoderError

    out = Path(args.out)
    check_output_file(out, (".safetensors",))
    if out.exists() and not args.overwrite:
        raise BrainEncoderError(f"{out} exists; pass --overwrite to replace it")
    model = import_original(
        args.checkpoint,
        _group_space(args.data),
        pca=args.pca,
        trunk=args.trunk,
        layers=[int(x) if x.lstrip("-").isdigit() else x for x in args.layers or []] or None,
        trunk_weights=args.trunk_weights,
        img_size=args.img_size,
    )
    save_encoder(model, out, {"imported_from": Path(args.checkpoint).name})
    n = sum(p.numel() for p in model.readout.parameters() if p.requires_grad)
    print(
        f"wrote {out}: {model.config.trunk} + grouplin readout ({n / 1e6:.1f} M parameters), "
        f"subjects {model.space.subjects}, {model.space.n_vertices} group vertices"
    )
    return 0


def _cmd_explore(args: argparse.Namespace) -> int:
    from ..experiments.explore import explore

    outputs = explore(
        args.run_dir,
        args.images,
        args.subject,
        args.roi,
        args.out,
        args.top,
        args.data,
        args.dataset,
        args.rows,
    )
    for name, path in outputs.items():
        print(f"  {name:<10} {path}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from ..evaluation.compare import compare_runs

    ensembles = [[Path(r) for r in spec.split(",")] for spec in args.ensemble or []]
    outputs = compare_runs(
        [*args.run_dirs, *ensembles],
        args.out,
        args.split,
        args.store,
        args.noise_ceiling,
        args.n_boot,
    )
    for name, path in outputs.items():
        print(f"  {name:<6} {path}")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from ..data.layout import read_layout
    from ..evaluation.submission import score_submission

    layout = read_layout(args.data) if args.data is not None else None
    scores = score_submission(args.submission, args.truth, layout)
    for key, value in scores.items():
        if key.startswith("subj"):
            print(f"  {key}: {value:.2f}%")
    print(f"challenge score (the devkit's: mean over every vertex): {scores['all']:.2f}%")
    print(f"  median over vertices: {scores['median']:.2f}%")
    print(f"  mean over vertices with noise ceiling > 0 only: {scores['all_nc_positive']:.2f}%")
    return 0


def _cmd_adapt(args: argparse.Namespace) -> int:
    from ..experiments.adapt import adapt, load_adapt_config

    summary = adapt(
        args.run_dir,
        args.data,
        args.subject,
        args.out,
        n_images=args.n_images,
        seed=args.seed,
        config=load_adapt_config(args.overrides),
        overwrite=args.overwrite,
        overwrite_subject=args.overwrite_subject,
    )
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out}; evaluate it with 'brainencoder evaluate {args.out}'")
    return 0


def _cmd_soup(args: argparse.Namespace) -> int:
    from ..runs.soup import soup_runs

    summary = soup_runs(
        args.run_dirs, args.out, greedy=not args.uniform, store=args.store, overwrite=args.overwrite
    )
    for item in summary["ingredients"]:
        mark = "kept" if item["run"] in summary["kept"] else "left out"
        print(f"  {item['run']}: val/r2_median {item['val']:.4f} ({mark})")
    print(
        f"{summary['kind']} soup of {len(summary['kept'])} runs: val/r2_median "
        f"{summary['val']:.4f} (best ingredient {summary['best_ingredient_val']:.4f}); "
        f"wrote {args.out}"
    )
    return 0


def _group_space(data: Path):
    """The group space of a prepared store or a challenge-layout folder."""
    if (Path(data) / "space.npz").exists():
        from ..data.store import Store

        return Store(data).space
    from ..core.space import GroupSpace
    from ..data.layout import read_layout

    layout = read_layout(data)
    return GroupSpace.from_masks({n: s.masks for n, s in layout.subjects.items()})


def add_experiment_commands(sub: argparse._SubParsersAction) -> None:
    """Register the experiment commands on the subparsers ``sub``."""
    p = sub.add_parser(
        "import-original",
        help="convert a checkpoint of the original GroupLin entry into a model file",
    )
    p.add_argument("checkpoint", type=Path, help="ckpt-best.pt of algonauts23's training script")
    p.add_argument(
        "--data", type=Path, required=True, help="challenge data root or store (group space)"
    )
    p.add_argument("--pca", type=Path, default=None, help="its group_pca_d-*.pt (checked)")
    p.add_argument("--out", type=Path, required=True, help="model file (.safetensors)")
    p.add_argument("--trunk", default="eva02_base_patch14_224.mim_in22k")
    p.add_argument("--layers", nargs="+", default=None, help="default: blocks.[02468] blocks.10")
    p.add_argument(
        "--trunk-weights", type=Path, default=None, help="pretrained trunk file (phase 1)"
    )
    p.add_argument("--img-size", type=positive_int, default=None)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_import_original)

    p = sub.add_parser("explore", help="rank images by predicted ROI response (in silico)")
    p.add_argument("run_dir", type=Path, help="run folder or model file")
    p.add_argument(
        "images", type=Path, help="a folder of images, or a .npy / HDF5 file of uint8 images"
    )
    p.add_argument("--dataset", default=None, help="HDF5 dataset (default: the only image one)")
    p.add_argument("--rows", type=row_slice, default=None, help="START:STOP rows of an array")
    p.add_argument("--subject", required=True, help="a subject of the model, or 'all'")
    p.add_argument(
        "--roi", action="append", required=True, help="ROI name; give two for ROI1 - ROI2"
    )
    p.add_argument("--top", type=positive_int, default=8)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--data", type=Path, default=None, help="default: the run's data root")
    p.set_defaults(func=_cmd_explore)

    p = sub.add_parser("compare", help="runs side by side, differences with bootstrap intervals")
    p.add_argument("run_dirs", type=Path, nargs="+", help="the first is the reference")
    p.add_argument("--split", default="testval", choices=("testval", "val", "test"))
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--store", type=Path, default=None, help="default: the first run's store")
    p.add_argument(
        "--noise-ceiling", type=Path, default=None, help="noise ceilings (and test responses)"
    )
    p.add_argument(
        "--ensemble",
        action="append",
        metavar="RUN,RUN[,...]",
        help="also compare the mean prediction of these runs (repeatable)",
    )
    p.add_argument("--n-boot", type=positive_int, default=200, help="bootstrap resamples")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("soup", help="average the weights of compatible runs (model soup)")
    p.add_argument("run_dirs", type=Path, nargs="+", help="runs fine-tuned from one model")
    p.add_argument("--out", type=Path, required=True, help="new run folder")
    p.add_argument(
        "--uniform", action="store_true", help="average every run (default: greedy by val score)"
    )
    p.add_argument("--store", type=Path, default=None, help="default: the first run's store")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_soup)

    p = sub.add_parser("score", help="the challenge score of any submission zip")
    p.add_argument("submission", type=Path)
    p.add_argument(
        "--truth",
        type=Path,
        required=True,
        help="folder with subjXX/{lh,rh}_test_fmri.npy and {lh,rh}_noise_ceiling.npy",
    )
    p.add_argument("--data", type=Path, default=None, help="challenge data root (checks shapes)")
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser(
        "adapt", help="fit a new subject to a trained model from a few hundred images"
    )
    p.add_argument("run_dir", type=Path, help="trained run folder or model file")
    p.add_argument("overrides", nargs="*", help="key=value settings, e.g. epochs=30 lr=3e-3")
    p.add_argument("--data", type=Path, required=True, help="challenge data root or store")
    p.add_argument("--subject", required=True, help="the new subject, e.g. subj04")
    p.add_argument("--out", type=Path, required=True, help="new run folder")
    p.add_argument("--n-images", type=positive_int, default=None, help="default: all")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument(
        "--overwrite-subject", action="store_true", help="replace the model's subject of that name"
    )
    p.set_defaults(func=_cmd_adapt)
