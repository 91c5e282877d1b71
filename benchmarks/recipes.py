"""Readout recipes past `point`: test score, CPU training time and step time, side by side.

Usage: python benchmarks/recipes.py [--seeds 0 1 2] [--only NAME ...] [--reduced]

Each recipe is a set of overrides of `configs/demo.yaml` (the tiny encoder from
its feature cache, 20 epochs), trained on the planted-truth dataset of
`benchmarks/readouts.py` (4 subjects x 150 training images, 60 test images,
categories) for every seed. Reported per recipe, all measured in this one run:

* test score: the devkit's noise-normalized score (%) against the planted truth,
  mean +- sd over seeds;
* train s: the training loop's wall time (feature caching excluded: one cache
  per seed serves every recipe), mean over seeds;
* step s: one training step (forward, backward, AdamW) of the readout alone at
  the demo's shape (batch 64; the tiny encoder's three maps at 112 px: 64 x 28 x
  28, 128 x 14 x 14, 256 x 7 x 7; the demo's 2,400 group vertices, 3 subjects),
  best of 5, and its ratio to the demo's readout (`grouplin_seq`).

Ideas that did not help stay in the table with their numbers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from brainencoder.data.prepare import prepare_store
from brainencoder.data.synthetic import SyntheticConfig, make_synthetic
from brainencoder.models.readouts import create_readout
from brainencoder.runs.load import load_model
from brainencoder.training.config import load_config
from brainencoder.training.loop import train
from brainencoder.training.losses import masked_mse
from readouts import GROUPLIN_SEQ, test_score

POINT = "name: point, channels: 32"
RECIPES = {
    "grouplin_seq (the demo's)": GROUPLIN_SEQ,
    "point": [f"model.readout={{{POINT}}}", "lr=1e-2"],
    "point, maps pooled to 14x14": [f"model.readout={{{POINT}, max_grid: 14}}", "lr=1e-2"],
    "point, maps pooled to 7x7": [f"model.readout={{{POINT}, max_grid: 7}}", "lr=1e-2"],
    "point, softplus output": [f"model.readout={{{POINT}, output: softplus}}", "lr=1e-2"],
    "point, centre-surround": [f"model.readout={{{POINT}, surround: true}}", "lr=1e-2"],
    "point, shared rank 8": [f"model.readout={{{POINT}, shared_rank: 8}}", "lr=1e-2"],
    "point, softplus + shared rank 8": [
        f"model.readout={{{POINT}, output: softplus, shared_rank: 8}}",
        "lr=1e-2",
    ],
    "point + stem layer, 14x14": [
        f"model.readout={{{POINT}, max_grid: 14}}",
        "model.layers=[act1, layer1, layer2, layer3]",
        "lr=1e-2",
    ],
    "point + stem, softplus, shared 8": [
        f"model.readout={{{POINT}, max_grid: 14, output: softplus, shared_rank: 8}}",
        "model.layers=[act1, layer1, layer2, layer3]",
        "lr=1e-2",
    ],
    "point, all four": [
        f"model.readout={{{POINT}, max_grid: 14, output: softplus, surround: true, "
        "shared_rank: 8}",
        "lr=1e-2",
    ],
}
SHAPES = [(64, 28, 28), (128, 14, 14), (256, 7, 7)]
STEM = (64, 56, 56)  # the ResNet stem (act1) at 112 px, for recipes that read it


def _readout_options(overrides: list[str]) -> dict:
    """The readout of a recipe, as create_readout's name and options."""
    cfg = load_config("configs/demo.yaml", overrides)
    return dict(cfg.encoder_config().readout)


def step_seconds(overrides: list[str], n_vertices: int, batch: int, repeats: int = 5) -> float:
    """One readout training step at the demo's shape (best of ``repeats``)."""
    options = _readout_options(overrides)
    name = options.pop("name")
    shapes = [STEM, *SHAPES] if any("act1" in o for o in overrides) else SHAPES
    torch.manual_seed(0)
    readout = create_readout(name, shapes, ["subj01", "subj02", "subj03"], n_vertices, **options)
    feats = [torch.randn(batch, *s) for s in shapes]
    subject = torch.arange(batch) % 3
    target = torch.randn(batch, n_vertices)
    mask = torch.ones(batch, n_vertices, dtype=torch.bool)
    opt = torch.optim.AdamW(readout.parameters(), lr=1e-3)

    def step() -> None:
        loss = masked_mse(readout(feats, subject), target, mask) + readout.regularizer()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="*", help="recipes to run (default: all)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--reduced", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--steps-only", action="store_true", help="only the step times")
    args = parser.parse_args(argv)
    recipes = {k: v for k, v in RECIPES.items() if not args.only or k in args.only}
    n_subjects, n_train, n_test, size = 4, 150, 60, 128
    if args.reduced:
        args.seeds, args.epochs, n_subjects, n_train, n_test, size = [0], 1, 2, 40, 8, 48
    steps = {k: step_seconds(v, 2400 if not args.reduced else 400, 64) for k, v in recipes.items()}
    if args.steps_only:
        base = steps.get("grouplin_seq (the demo's)", float("nan"))
        for name, value in steps.items():
            print(f"{name:<34} {value:8.3f} s {value / base:6.2f}x the demo's readout")
        return {"steps": steps}
    scores: dict[str, list[float]] = {k: [] for k in recipes}
    seconds: dict[str, list[float]] = {k: [] for k in recipes}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = SyntheticConfig(
            n_subjects=n_subjects, n_train=n_train, n_test=n_test, categories=True
        )
        make_synthetic(tmp / "data", cfg)
        truth = tmp / "data" / "truth"
        store = prepare_store(tmp / "data", tmp / "store", image_size=size, progress=False)
        for seed in args.seeds:
            common = [f"seed={seed}", f"cache_dir={tmp / 'cache'}", f"epochs={args.epochs}"]
            if args.reduced:
                common += ["model.img_size=32", "batch_size=16"]
            for name, overrides in recipes.items():
                if args.reduced and "grouplin" in name:  # a PCA of the few smoke-run images
                    overrides = [*overrides, "model.readout.latent_dim=16"]
                run = tmp / f"seed{seed}" / name.replace(" ", "_")
                summary = train(
                    load_config("configs/demo.yaml", [*common, *overrides]),
                    store.path,
                    run,
                    progress=False,
                )
                seconds[name].append(summary["seconds"])
                scores[name].append(test_score(load_model(run), store, truth))
                print(
                    f"  seed {seed} {name:<32} {scores[name][-1]:6.2f} "
                    f"({summary['seconds']:.0f} s; {time.perf_counter() - t_start:.0f} s in all)",
                    flush=True,
                )
    base = steps.get("grouplin_seq (the demo's)")
    print(f"\ntest score (%) over seeds {args.seeds}; times on {torch.get_num_threads()} threads")
    print(f"{'recipe':<34} {'test score':>14} {'train s':>8} {'step s':>8} {'step / demo':>12}")
    for name in recipes:
        s = np.asarray(scores[name])
        ratio = steps[name] / base if base else float("nan")
        print(
            f"{name:<34} {s.mean():7.2f} +- {s.std():4.2f} {np.mean(seconds[name]):8.1f} "
            f"{steps[name]:8.3f} {ratio:12.2f}"
        )
    result = {"scores": scores, "seconds": seconds, "steps": steps}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
