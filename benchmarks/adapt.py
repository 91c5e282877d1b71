"""A new subject from N images: `adapt` vs per-subject ridge vs retraining the group model.

Usage: python benchmarks/adapt.py [--n-train 600] [--seeds 3] [--sizes 25 50 100 200 400 0]
       [--readouts grouplin_seq grouplin point roi_query] [--scratch-sizes 100 0]

One synthetic dataset with planted truth: 3 group subjects and one held-out
subject (its own images, noise and vertex subset). A group model (the tiny
encoder, `configs/demo.yaml`, with each readout of --readouts as in
benchmarks/readouts.py) is trained on the group. Then, for the held-out
subject and each N (0 = all its training images) and seed:

* adapt: `brainencoder adapt` with N images (feature caching included in its time);
* ridge: per-vertex-alpha ridge (5-fold) on the same random ResNet-18 trunk's
  2x2-pooled features of the same N images;
* scratch: the group model trained from scratch with the held-out subject
  included with the same N images (at the sizes given by --scratch-sizes).

Prints the mean noise-normalized test score (planted truth) and wall time per
row, mean over seeds.
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
from brainencoder.data.prepare import prepare_store
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


def _ridge(store, rows, test_images, data) -> float:
    """Per-subject ridge on the same images, same random trunk (fit_subject_ridge)."""
    ridge = fit_subject_ridge(store, HELD, rows)
    return float(
        subject_test_scores(ridge.predict(test_images, HELD), data / "truth", HELD)[0].mean()
    )


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
        nsd = src.name.split("_nsd-")[1]
        (folder / f"train-{i + 1:04d}_nsd-{nsd}").symlink_to(src)
    fmri = out / HELD / "training_split" / "training_fmri"
    for h in ("lh", "rh"):
        arr = np.load(data / HELD / "training_split" / "training_fmri" / f"{h}_training_fmri.npy")
        (fmri / f"{h}_training_fmri.npy").unlink()
        np.save(fmri / f"{h}_training_fmri.npy", arr[rows])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-train", type=int, default=600)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100, 200, 400, 0])
    parser.add_argument("--readouts", nargs="+", default=["grouplin_seq"], choices=list(READOUTS))
    parser.add_argument("--scratch-sizes", type=int, nargs="*", default=[100, 0])
    args = parser.parse_args()
    t0 = time.perf_counter()
    tables = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = SyntheticConfig(n_subjects=3, held_out=1, n_train=args.n_train, n_test=100)
        data = make_synthetic(tmp / "data", cfg)
        group = prepare_store(data, tmp / "group", subjects=GROUP, progress=False)
        held = prepare_store(data, tmp / "held", subjects=[HELD], progress=False)
        test_images = held.read_images(held.subject(HELD).test_rows)
        ridge_cache: dict[tuple[int, int], tuple[float, float]] = {}
        for readout in args.readouts:
            overrides = [*READOUTS[readout], f"cache_dir={tmp / 'cache'}"]
            t = time.perf_counter()
            train(load_config("configs/demo.yaml", overrides), group.path, tmp / readout)
            print(f"{readout} group model: {time.perf_counter() - t:.0f} s", flush=True)
            tables[readout] = _sizes(args, tmp, readout, data, held, test_images, ridge_cache)
    print(
        f"\nheld-out subject {HELD}: test score (%, mean over vertices), mean over "
        f"{args.seeds} seeds; wall time (s) on {os.cpu_count()} cores"
    )
    for readout, rows_out in tables.items():
        print(f"\ngroup model readout: {readout}")
        print(
            f"{'N images':>9} {'adapt':>8} {'ridge':>8} {'scratch':>8} {'adapt/ridge':>12} "
            f"{'t adapt':>8} {'t ridge':>8} {'t scratch':>10}"
        )
        for n, r in rows_out:

            def m(k, r=r):
                return float(np.mean(r[k])) if r[k] else float("nan")

            print(
                f"{n:>9} {m('adapt'):8.2f} {m('ridge'):8.2f} {m('scratch'):8.2f} "
                f"{m('adapt') / m('ridge'):12.2f} {m('t_adapt'):8.1f} {m('t_ridge'):8.1f} "
                f"{m('t_scratch'):10.1f}"
            )
    print(f"total {time.perf_counter() - t0:.0f} s")


def _sizes(args, tmp, readout, data, held, test_images, ridge_cache) -> list:
    """Adapt the group model of ``readout`` at every N and seed (ridge computed once per N)."""
    rows_out = []
    for n in args.sizes:
        res = {k: [] for k in ("adapt", "ridge", "scratch", "t_adapt", "t_ridge", "t_scratch")}
        for seed in range(args.seeds):
            out = tmp / f"ad-{readout}-{n}-{seed}"
            t = time.perf_counter()
            adapt(
                tmp / readout,
                held.path,
                HELD,
                out,
                n_images=n or None,
                seed=seed,
                config=AdaptConfig(cache_dir=str(tmp / f"cache-{readout}-{n}-{seed}")),
            )
            res["t_adapt"].append(time.perf_counter() - t)
            res["adapt"].append(_score(evaluate_run(out, "test", held, data / "truth")))
            train_rows, val_rows = choose_rows(held, HELD, n or None, seed, 0.15)
            rows = np.sort(np.concatenate([train_rows, val_rows]))
            if (n, seed) not in ridge_cache:  # the same images for every readout
                t = time.perf_counter()
                score = _ridge(held, rows, test_images, data)
                ridge_cache[n, seed] = (score, time.perf_counter() - t)
            res["ridge"].append(ridge_cache[n, seed][0])
            res["t_ridge"].append(ridge_cache[n, seed][1])
            if n in args.scratch_sizes:
                sub = _subset_data(data, rows, tmp / f"data-{readout}-{n}-{seed}")
                t = time.perf_counter()
                store = prepare_store(sub, tmp / f"store-{readout}-{n}-{seed}", progress=False)
                overrides = [*READOUTS[readout], f"cache_dir={tmp / 'cache'}"]
                cfg_all = load_config("configs/demo.yaml", overrides)
                train(cfg_all, store.path, tmp / f"scratch-{readout}-{n}-{seed}", progress=False)
                res["t_scratch"].append(time.perf_counter() - t)
                run = tmp / f"scratch-{readout}-{n}-{seed}"
                res["scratch"].append(_score(evaluate_run(run, "test", store, data / "truth")))
        rows_out.append((n or len(rows), res))
        print(readout, n, {k: np.round(v, 2).tolist() for k, v in res.items()}, flush=True)
    return rows_out


if __name__ == "__main__":
    main()
