"""Ensembles weighted on validation: plain mean vs per-vertex, per-ROI, stacked and best-member.

Usage: python benchmarks/ensembles.py [--n-train 300] [--n-test 100] [--epochs 20]
       [--members point:0 point:1 grouplin_seq:0]

One synthetic dataset with planted truth (3 subjects). Each member is
`configs/demo.yaml` with the readout's settings of benchmarks/readouts.py and
its seed, trained on the **train split only** (`train_on=[train]`: the val
split chooses the weights, and `val_weights` refuses runs that saw it). The
ensemble's weights come from `brainencoder.runs.ensemble.val_weights(by=...)`
on the store's val split; every row is scored on the test images against the
planted truth (%, mean over the vertices of every subject), with each member
alone for reference.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from brainencoder.data.prepare import prepare_store
from brainencoder.data.synthetic import SyntheticConfig, make_synthetic
from brainencoder.evaluation.submission import subject_test_scores
from brainencoder.runs.ensemble import EnsembleModel, val_weights
from brainencoder.runs.ensemble_weights import WEIGHTINGS
from brainencoder.runs.load import load_model
from brainencoder.training.config import load_config
from brainencoder.training.loop import train
from readouts import READOUTS


def _test_score(model, store, truth: Path) -> float:
    scores = []
    for name in store.names:
        images = store.read_images(store.subject(name).test_rows)
        scores.append(subject_test_scores(model.predict(images, name), truth, name)[0])
    return float(np.concatenate(scores).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-train", type=int, default=300)
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--members", nargs="+", default=["point:0", "point:1", "grouplin_seq:0"])
    args = parser.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = SyntheticConfig(n_subjects=3, n_train=args.n_train, n_test=args.n_test)
        data = make_synthetic(tmp / "data", cfg)
        store = prepare_store(data, tmp / "store", progress=False)
        runs = []
        for member in args.members:
            readout, seed = member.split(":")
            over = [
                *READOUTS[readout],
                f"seed={seed}",
                f"epochs={args.epochs}",
                "train_on=[train]",
                f"cache_dir={tmp / 'cache'}",
            ]
            t = time.perf_counter()
            run = tmp / member.replace(":", "-")
            train(load_config("configs/demo.yaml", over), store.path, run, progress=False)
            print(f"{member}: {time.perf_counter() - t:.0f} s", flush=True)
            runs.append(run)
        models = [load_model(r) for r in runs]
        rows = [
            (f"{m} alone", _test_score(x, store, data / "truth"))
            for m, x in zip(args.members, models)
        ]
        rows.append(("plain mean", _test_score(EnsembleModel(models), store, data / "truth")))
        for by in WEIGHTINGS:
            t = time.perf_counter()
            weights = val_weights(models, runs, store, by=by)
            seconds = time.perf_counter() - t
            score = _test_score(EnsembleModel(models, weights=weights), store, data / "truth")
            rows.append((f"val weights, by={by} ({seconds:.1f} s)", score))
        n_val = sum(store.split_rows(n, "val").size for n in store.names)
    print(f"\ntest score (%, planted truth, mean over vertices); {n_val} val images in all")
    print("| ensemble of " + ", ".join(args.members) + " | test score |")
    print("|---|---:|")
    for label, score in rows:
        print(f"| {label} | {score:.2f} |")
    print(f"total {time.perf_counter() - t0:.0f} s on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
