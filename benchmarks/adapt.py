"""A new subject from N images: `adapt` vs zero-shot, per-subject ridge and a model trained with it.

Usage: python benchmarks/adapt.py [--worlds subjects retino] [--readouts point ...]
       [--sizes 0 25 100 400 -1] [--seeds 3] [--n-train 640] [--n-vertices 400]
       [--image-size 96] [--pulls 0.01 0.1 1] [--folds 5] [--no-gain-only]
       [--scratch-sizes -1]
       [--overrides epochs=8 ...]

Two planted worlds (synthetic data with planted truth, 3 group subjects and a
held-out subj04 with its own images, noise and vertex subset):

* ``subjects``: subjects differ per vertex (each subject's receptive-field
  centres shifted and feature weights jittered smoothly around the group's:
  ``SyntheticConfig(world="subjects")``, the presets of ``subject_rf_shift``
  and ``subject_tuning_jitter``, or --rf-shift / --jitter);
* ``retino``: the same features, subjects share their tuning.

Per world and readout (each as in benchmarks/readouts.py, on configs/demo.yaml):
a group model trained on subj01-03 (train split), and a model trained the same
way with subj04 among the group subjects, with all its train-split images
("with"; also with N of them at each N of --scratch-sizes). Then for each N (0: the
zero-shot model; -1: all of subj04's train-split images) and seed:

* adapt: `brainencoder adapt` with N images (its own tuning pulled toward the
  group's, the pull chosen on --folds folds of its images, the mean of the
  chosen pull's fold fits kept);
* gain only: `adapt` with `personal=False` (the subject's gain and offset only:
  brainencoder's adaptation before issue 35);
* ridge: per-vertex-alpha ridge (5-fold) on the random ResNet-18 trunk's
  2x2-pooled features of the same N images.

Prints subj04's noise-normalized test score (%, planted truth, mean over
vertices), mean and sd over seeds, and the fraction of the gap from zero-shot
to "with" that adapt closes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from brainencoder.baselines.ridge import fit_subject_ridge
from brainencoder.data.layout import read_layout
from brainencoder.data.prepare import PrepareOptions, prepare_store
from brainencoder.data.synthetic import SyntheticConfig, make_synthetic
from brainencoder.evaluation.evaluate import evaluate_run
from brainencoder.evaluation.submission import subject_test_scores
from brainencoder.experiments.adapt import AdaptConfig, adapt, choose_rows
from brainencoder.training.config import load_config
from brainencoder.training.loop import train
from readouts import READOUTS

HELD = "subj04"
GROUP = ["subj01", "subj02", "subj03"]


def _score(table) -> float:
    sel = table[(table.subject == HELD) & (table.metric == "score")]
    sel = sel[(sel.hemisphere == "both") & (sel.roi_group == "all") & (sel.statistic == "mean")]
    return float(sel.value.iloc[0])


def _world(args, tmp: Path, world: str) -> tuple[Path, object, object, object]:
    """The world's data, its group store, subj04's store and the store of all four."""
    cfg = SyntheticConfig(
        n_subjects=3,
        held_out=1,
        n_train=args.n_train,
        n_test=100,
        n_vertices=args.n_vertices,
        image_size=args.image_size,
        world=world,
        subject_rf_shift=args.rf_shift if world == "subjects" else 0.0,
        subject_tuning_jitter=args.jitter if world == "subjects" else 0.0,
    )
    data = make_synthetic(tmp / world / "data", cfg)
    options = PrepareOptions(image_size=args.image_size)
    stores = [
        prepare_store(data, tmp / world / name, options, subjects=subjects, progress=False)
        for name, subjects in (("group", GROUP), ("held", [HELD]), ("all", [*GROUP, HELD]))
    ]
    return (data, *stores)


def _adapt_score(run, held, data, out, n, seed, config) -> tuple[float, float, dict]:
    """adapt's test score on subj04, its wall time and its summary."""
    t = time.perf_counter()
    n_images = None if n < 0 else n
    summary = adapt(run, held.path, HELD, out, n_images=n_images, seed=seed, config=config)
    seconds = time.perf_counter() - t
    return _score(evaluate_run(out, "test", held, data / "truth")), seconds, summary


def _ridge(held, n, seed, data) -> float:
    """Per-subject ridge on the same images as adapt's (seeded N of the train split)."""
    train_rows, val_rows = choose_rows(held, HELD, None if n < 0 else n, seed, 0.15)
    ridge = fit_subject_ridge(held, HELD, np.sort(np.concatenate([train_rows, val_rows])))
    test = held.read_images(held.subject(HELD).test_rows)
    return float(subject_test_scores(ridge.predict(test, HELD), data / "truth", HELD)[0].mean())


def _subset_data(data: Path, rows: np.ndarray, out: Path) -> Path:
    """A copy of the data (images linked) where the held-out subject keeps only ``rows``."""
    shutil.copytree(data, out, symlinks=True, ignore=shutil.ignore_patterns("*.png"))
    for path in data.rglob("*.png"):
        (out / path.relative_to(data)).symlink_to(path)
    layout = read_layout(data, [HELD])
    folder = out / HELD / "training_split" / "training_images"
    for p in folder.iterdir():
        p.unlink()
    for i, r in enumerate(rows):
        src = layout[HELD].train_images[r]
        (folder / f"train-{i + 1:04d}_nsd-{src.name.split('_nsd-')[1]}").symlink_to(src)
    fmri = out / HELD / "training_split" / "training_fmri"
    for h in ("lh", "rh"):
        arr = np.load(data / HELD / "training_split" / "training_fmri" / f"{h}_training_fmri.npy")
        (fmri / f"{h}_training_fmri.npy").unlink()
        np.save(fmri / f"{h}_training_fmri.npy", arr[rows])
    return out


def _with(args, tmp, runs, stores, overrides, n) -> float:
    """subj04's test score of a group model trained with subj04's N images (-1: all)."""
    data, _group, held, every = stores
    store = every
    if n >= 0:  # the same seeded N images as adapt's seed 0, the others' data unchanged
        train_rows, val_rows = choose_rows(held, HELD, n, 0, 0.15)
        rows = np.sort(np.concatenate([train_rows, val_rows]))
        sub = _subset_data(data, rows, runs / f"data-{n}")
        store = prepare_store(
            sub, runs / f"store-{n}", PrepareOptions(image_size=args.image_size), progress=False
        )
    run = runs / f"with-{n}"
    train(load_config("configs/demo.yaml", overrides), store.path, run, progress=False)
    return _score(evaluate_run(run, "test", store, data / "truth"))


def _readout(args, tmp, world, readout, stores) -> dict:
    """Every row of one world and readout: {N: {column: [value per seed]}}."""
    data, group, held, _every = stores
    overrides = [*READOUTS[readout], f"cache_dir={tmp / world / 'cache'}", *args.overrides]
    runs = tmp / world / readout
    t = time.perf_counter()
    train(load_config("configs/demo.yaml", overrides), group.path, runs / "group", progress=False)
    with_scores = {n: _with(args, tmp, runs, stores, overrides, n) for n in args.scratch_sizes}
    print(f"{world} {readout}: group and 'with' models {time.perf_counter() - t:.0f} s", flush=True)
    rows: dict = {}
    for n in args.sizes:
        res: dict = {k: [] for k in ("adapt", "gain", "ridge", "pull", "t_adapt")}
        for seed in range(1 if n == 0 else args.seeds):
            cache = str(tmp / world / f"cache-{readout}")
            config = AdaptConfig(cache_dir=cache, pulls=list(args.pulls), folds=args.folds)
            out = runs / f"ad-{n}-{seed}"
            score, seconds, summary = _adapt_score(runs / "group", held, data, out, n, seed, config)
            res["adapt"].append(score)
            res["t_adapt"].append(seconds)
            res["pull"].append(summary.get("pull"))
            if n and args.gain_only:
                plain = AdaptConfig(cache_dir=cache, personal=False)
                out = runs / f"gain-{n}-{seed}"
                res["gain"].append(_adapt_score(runs / "group", held, data, out, n, seed, plain)[0])
            if n:
                res["ridge"].append(_ridge(held, n, seed, data))
        rows[n] = res
        print(world, readout, n, {k: v for k, v in res.items() if v}, flush=True)
    rows["with"] = with_scores
    return rows


def _print(world: str, readout: str, rows: dict, seeds: int) -> None:
    """The table of one world and readout (Markdown)."""
    zero = float(np.mean(rows[0]["adapt"])) if 0 in rows else float("nan")
    with_scores = rows["with"]
    with_all = with_scores.get(-1, float("nan"))  # the gap's end: trained with all its images
    print(f"\n{world} world, {readout}: zero-shot {zero:.1f}, trained with subj04 {with_all:.1f}")
    print(
        "| N | adapt | gain only | ridge | trained with subj04 | gap closed | pull kept | adapt s |"
    )
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for n, res in rows.items():
        if n == "with":
            continue

        def m(key, res=res):
            v = res[key]
            if not v:
                return "-"
            sd = f" ± {np.std(v):.1f}" if len(v) > 1 else ""
            return f"{np.mean(v):.1f}{sd}"

        gap = (np.mean(res["adapt"]) - zero) / (with_all - zero) if n else 0.0
        pulls = ",".join(f"{p:g}" for p in res["pull"] if p is not None) or "-"
        label = "all" if n < 0 else str(n)
        scratch = f"{with_scores[n]:.1f}" if n in with_scores else ""
        print(
            f"| {label} | {m('adapt')} | {m('gain')} | {m('ridge')} | {scratch} | {gap:.0%} | "
            f"{pulls} | {np.mean(res['t_adapt']):.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worlds", nargs="+", default=["subjects", "retino"])
    parser.add_argument("--readouts", nargs="+", default=["point"], choices=list(READOUTS))
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 25, 100, 400, -1])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=640)
    parser.add_argument("--n-vertices", type=int, default=400)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--rf-shift", type=float, default=0.0, help="0: the world's preset")
    parser.add_argument("--jitter", type=float, default=0.0, help="0: the world's preset")
    parser.add_argument("--pulls", type=float, nargs="+", default=AdaptConfig().pulls)
    parser.add_argument(
        "--folds", type=int, default=AdaptConfig().folds, help="adapt's folds (0: one val split)"
    )
    parser.add_argument("--no-gain-only", dest="gain_only", action="store_false")
    parser.add_argument(
        "--scratch-sizes",
        type=int,
        nargs="*",
        default=[-1],
        help="N (-1: all) at which a group model is trained with subj04 among its subjects",
    )
    parser.add_argument(
        "--overrides",
        nargs="*",
        default=[],
        help="key=value for the group models' configs/demo.yaml (e.g. epochs=8 model.img_size=64)",
    )
    args = parser.parse_args()
    t0 = time.perf_counter()
    tables = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for world in args.worlds:
            stores = _world(args, tmp, world)
            for readout in args.readouts:
                tables[world, readout] = _readout(args, tmp, world, readout, stores)
    print(
        f"\nsubj04 test score (%, planted truth, mean over vertices; mean ± sd over "
        f"{args.seeds} seeds), {os.cpu_count()} cores"
    )
    for (world, readout), rows in tables.items():
        _print(world, readout, rows, args.seeds)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
