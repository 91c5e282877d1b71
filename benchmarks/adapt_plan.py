"""Which images to show a new subject: `plan`'s choices vs random images, through `adapt`.

Usage: python benchmarks/adapt_plan.py [--n-train 1000] [--sizes 25 100 400] [--draws 8]
       [--methods dopt cover kcenter] [--readout grouplin_seq] [--members 1] [--zero]
       [--adapt-epochs 60]

The setup of benchmarks/adapt.py: one synthetic dataset with planted truth, 3
group subjects and a held-out subj04 (SyntheticConfig(held_out=1)); a group
model (`configs/demo.yaml` with the readout's settings of
benchmarks/readouts.py; ``--members 2`` trains a second seed, for
``disagreement``). The pool is subj04's train-split images (what `adapt` may
train on). For each N: every method of --methods picks N images
(`brainencoder.experiments.plan.select`, on the model's predicted responses to
the pool, computed once), and --draws random draws of N; `adapt` (seed 0)
trains on exactly those images. Printed: the test score of subj04 against the
planted truth (%, mean over vertices) of each planned list, the mean and
standard deviation of the random draws, and planned minus random with a 95%
bootstrap interval over the random draws (and over the test images: each
resample draws both). --zero adds the N = 0 row (the group model's
prediction at subj04's vertices, no training), where `adapt` supports it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from brainencoder.data.prepare import prepare_store
from brainencoder.data.sources import ImageFiles
from brainencoder.data.synthetic import SyntheticConfig, make_synthetic
from brainencoder.evaluation.submission import subject_test_scores
from brainencoder.experiments.adapt import AdaptConfig, adapt
from brainencoder.experiments.adapt_images import train_split_names
from brainencoder.experiments.plan import plan_images, select
from brainencoder.experiments.plan_features import pool_responses
from brainencoder.runs.load import load_model
from brainencoder.training.config import load_config
from brainencoder.training.loop import train
from readouts import READOUTS

HELD = "subj04"
GROUP = ["subj01", "subj02", "subj03"]
ADAPT_EPOCHS = [60]  # adapt's default; --adapt-epochs sets it


def _adapt_on(run: Path, held, names: list[str], out: Path, cache: Path) -> np.ndarray:
    """`adapt` on exactly ``names``; the per-vertex test scores of subj04 (planted truth)."""
    config = AdaptConfig(cache_dir=str(cache), epochs=ADAPT_EPOCHS[0])
    adapt(run, held.path, HELD, out, n_images=names, seed=0, config=config)
    return _scores(out, held)


def _scores(run: Path, held) -> np.ndarray:
    model = load_model(run)
    test = held.read_images(held.subject(HELD).test_rows)
    truth = Path(held.manifest["source"]["root"]) / "truth"
    return subject_test_scores(model.predict(test, HELD), truth, HELD)[0]


def _interval(planned: np.ndarray, draws: list[np.ndarray], seed: int = 0) -> tuple:
    """Planned minus random: mean and 95% bootstrap interval (draws and test vertices)."""
    rng = np.random.default_rng(seed)
    d = np.stack(draws)  # (n_draws, n_vertices)
    diffs = []
    for _ in range(2000):
        pick = rng.integers(d.shape[0], size=d.shape[0])
        cols = rng.integers(d.shape[1], size=d.shape[1])
        diffs.append(planned[cols].mean() - d[pick][:, cols].mean())
    return planned.mean() - d.mean(), *np.percentile(diffs, [2.5, 97.5])


def _setup(args, tmp: Path) -> tuple:
    cfg = SyntheticConfig(n_subjects=3, held_out=1, n_train=args.n_train, n_test=100)
    data = make_synthetic(tmp / "data", cfg)
    group = prepare_store(data, tmp / "group", subjects=GROUP, progress=False)
    held = prepare_store(data, tmp / "held", subjects=[HELD], progress=False)
    runs = []
    for member in range(args.members):
        over = [*READOUTS[args.readout], f"cache_dir={tmp / 'cache'}", f"seed={member}"]
        t = time.perf_counter()
        train(load_config("configs/demo.yaml", over), group.path, tmp / f"group-{member}")
        print(f"group model {member}: {time.perf_counter() - t:.0f} s", flush=True)
        runs.append(tmp / f"group-{member}")
    pool = tmp / "pool"
    pool.mkdir()
    folder = data / HELD / "training_split" / "training_images"
    for name in train_split_names(held, HELD):
        (pool / name).symlink_to(folder / name)
    return runs, held, pool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-train", type=int, default=1000)  # a pool of 850: N = 400 < half
    parser.add_argument("--sizes", type=int, nargs="+", default=[25, 100, 400])
    parser.add_argument("--draws", type=int, default=8)
    parser.add_argument("--methods", nargs="+", default=["dopt", "cover", "kcenter"])
    parser.add_argument("--readout", default="grouplin_seq", choices=list(READOUTS))
    parser.add_argument("--members", type=int, default=1)
    parser.add_argument("--zero", action="store_true")
    parser.add_argument("--adapt-epochs", type=int, default=60)
    args = parser.parse_args()
    ADAPT_EPOCHS[0] = args.adapt_epochs
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs, held, pool = _setup(args, tmp)
        names = ImageFiles(sorted(pool.iterdir())).names
        t = time.perf_counter()
        models = [load_model(r) for r in runs]
        responses = pool_responses(models, ImageFiles(sorted(pool.iterdir())))
        print(f"pool responses ({len(names)} images): {time.perf_counter() - t:.1f} s")
        listed = plan_images(runs, pool, args.sizes[0], method=args.methods[0])
        assert listed == [names[i] for i in select(responses, args.sizes[0], args.methods[0])]
        rows = _table(args, runs[0], held, names, responses, tmp)
        if args.zero:
            out = tmp / "zero"
            adapt(runs[0], held.path, HELD, out, n_images=0, config=AdaptConfig())
            rows.insert(0, (0, {"zero": _scores(out, held)}, []))
        _print(args, rows)
    print(f"total {time.perf_counter() - t0:.0f} s on {os.cpu_count()} cores")


def _table(args, run, held, names, responses, tmp) -> list:
    out = []
    for n in args.sizes:
        planned = {}
        for method in args.methods:
            chosen = [names[i] for i in select(responses, n, method)]
            target = tmp / f"plan-{method}-{n}"
            planned[method] = _adapt_on(run, held, chosen, target, tmp / f"c-{method}-{n}")
            shutil.rmtree(target)
            print(n, method, round(float(planned[method].mean()), 2), flush=True)
        draws = []
        for draw in range(args.draws):
            chosen = [names[i] for i in select(responses, n, "random", seed=draw)]
            target = tmp / f"random-{n}-{draw}"
            draws.append(_adapt_on(run, held, chosen, target, tmp / f"c-r{draw}-{n}"))
            shutil.rmtree(target)
            print(n, "random", draw, round(float(draws[-1].mean()), 2), flush=True)
        out.append((n, planned, draws))
    return out


def _print(args, rows) -> None:
    print(
        f"\nheld-out {HELD}: test score (%, mean over its vertices), group readout {args.readout}"
    )
    print(
        f"| N | random ({args.draws} draws, mean ± sd) | method | planned "
        "| planned - random [95% CI] |"
    )
    print("|---:|---:|---|---:|---:|")
    for n, planned, draws in rows:
        if not draws:
            print(f"| {n} | | zero-shot | {planned['zero'].mean():.2f} | |")
            continue
        means = [d.mean() for d in draws]
        rand = f"{np.mean(means):.2f} ± {np.std(means, ddof=1):.2f}"
        for method, scores in planned.items():
            diff, lo, hi = _interval(scores, draws)
            gain = f"{diff:+.2f} [{lo:+.2f}, {hi:+.2f}]"
            print(f"| {n} | {rand} | {method} | {scores.mean():.2f} | {gain} |")


if __name__ == "__main__":
    main()
