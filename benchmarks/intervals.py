"""Calibrated prediction intervals against planted truth: coverage, width, noise ceiling.

Usage: python benchmarks/intervals.py [--n-train 400] [--n-test 60] [--seeds 3] [--epochs 8]

One synthetic dataset (3 subjects) with planted truth. Three seeds of the demo
encoder (`configs/demo.yaml`, trained on the train split only, so val and
testval are held out) form the ensemble; `be.calibrate` calibrates it on val +
testval; `Model.predict(..., interval=L)` gives the bounds for each subject's
test images, none of which calibration saw. Prints, per subject and level,
the fraction of (image, vertex) pairs whose planted noisy test response
(truth/subjXX/{lh,rh}_test_fmri.npy) lies inside, the mean width, and the
Spearman correlation between each vertex's mean width and its planted noise
ceiling.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

import brainencoder as be
from brainencoder.data.prepare import PrepareOptions, prepare_store
from brainencoder.data.synthetic import SyntheticConfig, make_synthetic
from brainencoder.training.config import load_config
from brainencoder.training.loop import train

LEVELS = (0.8, 0.9, 0.95)


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-train", type=int, default=400)
    p.add_argument("--n-test", type=int, default=60)
    p.add_argument("--n-vertices", type=int, default=600)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--data-seed", type=int, default=1)
    return p.parse_args()


def _rows(model, data: Path, subject: str) -> list[str]:
    images = data / subject / "test_split" / "test_images"
    truth = data / "truth" / subject
    y = np.concatenate([np.load(truth / f"{h}_test_fmri.npy") for h in ("lh", "rh")], 1)
    nc = np.concatenate([np.load(truth / f"{h}_noise_ceiling.npy") for h in ("lh", "rh")])
    out = []
    for level in LEVELS:
        pred = model.predict(images, subject, batch_size=64, interval=level)
        lower = np.concatenate([pred.lower[h] for h in ("lh", "rh")], 1)
        upper = np.concatenate([pred.upper[h] for h in ("lh", "rh")], 1)
        cover = float(np.mean((y >= lower) & (y <= upper)))
        width = upper - lower
        rho = spearmanr(width.mean(0), nc).statistic
        out.append(
            f"| {subject} | {level:.2f} | {100 * cover:.1f} | {width.mean():.2f} | {rho:+.2f} |"
        )
    return out


def main() -> None:
    args = _args()
    root = Path(tempfile.mkdtemp(prefix="intervals-"))
    cfg = SyntheticConfig(
        n_train=args.n_train,
        n_test=args.n_test,
        n_vertices=args.n_vertices,
        image_size=96,
        seed=args.data_seed,
    )
    data = make_synthetic(root / "data", cfg)
    store = prepare_store(data, root / "store", PrepareOptions(image_size=96), progress=False)
    start = time.perf_counter()
    runs = []
    for seed in range(args.seeds):
        overrides = [f"seed={seed}", f"epochs={args.epochs}", "train_on=[train]"]
        train(load_config("configs/demo.yaml", overrides), store.path, root / f"seed{seed}")
        runs.append(root / f"seed{seed}")
    trained = time.perf_counter() - start
    path = be.calibrate(runs)
    model = be.load(*runs)
    print(f"{len(runs)} seeds trained in {trained:.0f} s; calibration {path.name}")
    print("| subject | level | coverage (%) | mean width | Spearman(width, NC) |")
    print("|---|---:|---:|---:|---:|")
    for subject in model.subjects:
        print("\n".join(_rows(model, data, subject)), flush=True)


if __name__ == "__main__":
    main()
