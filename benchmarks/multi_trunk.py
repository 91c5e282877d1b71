"""Two trunks in one model against each alone, on every planted world.

Usage: python benchmarks/multi_trunk.py [--worlds retino edges ...] [--seeds 0 1 2]
       [--subjects 2] [--n-train 120] [--epochs 10] [--dropout 0.2]

For every synthetic world (``SyntheticConfig(world=...)``; default all) and
seed, trains configs/demo.yaml (the `point` readout from a feature cache) with

* ``encoder=tiny``: the random-init ResNet-18 alone (layers 1-3, 112 px);
* the random-init test ViT alone (blocks 1, 3, 5, 8 px patches, 112 px);
* ``encoder=tiny_pair``: both in one model, every vertex choosing among 6 maps;
* the pair with ``model.trunk_dropout`` (``--dropout``; 0: skipped);

and prints the mean noise-normalized test score (%) against the planted truth
(``test_score`` of benchmarks/readouts.py), per world and the mean over worlds,
mean and standard deviation over seeds, and whether the pair beats the better of
the two alone. Within a world the seed sets the trunks' initialisation; the
pair's ResNet is the ResNet alone of the same seed (its cache is reused).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from brainencoder.data.prepare import PrepareOptions, prepare_store
from brainencoder.data.synthetic import SyntheticConfig, make_synthetic
from brainencoder.data.synthetic_worlds import WORLDS
from brainencoder.runs.load import load_model
from brainencoder.training.config import load_config
from brainencoder.training.loop import train

sys.path.insert(0, str(Path(__file__).parent))
from readouts import test_score

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
VIT = ["model.trunk=test_vit", "model.layers=[1, 3, 5]", "model.trunk_kwargs={patch_size: 8}"]
ENCODERS = {
    "resnet18 alone (tiny)": ["encoder=tiny"],
    "test_vit alone": ["encoder=tiny", *VIT],
    "pair (tiny_pair)": ["encoder=tiny_pair"],
}


def main(argv: list[str] | None = None) -> dict[str, dict[str, list[float]]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worlds", nargs="+", default=WORLDS.names())
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--subjects", type=int, default=2)
    parser.add_argument("--n-train", type=int, default=120)
    parser.add_argument("--epochs", type=int, default=10, help="the demo's: 20")
    parser.add_argument("--dropout", type=float, default=0.2, help="trunk_dropout row (0: none)")
    args = parser.parse_args(argv)
    encoders = dict(ENCODERS)
    if args.dropout:
        encoders[f"pair, trunk_dropout {args.dropout}"] = [
            "encoder=tiny_pair",
            f"model.trunk_dropout={args.dropout}",
        ]
    t_start = time.perf_counter()
    scores: dict[str, dict[str, list[float]]] = {w: {} for w in args.worlds}
    with tempfile.TemporaryDirectory() as tmp:
        for world in args.worlds:
            root = Path(tmp) / world
            cfg = SyntheticConfig(
                n_subjects=args.subjects, n_train=args.n_train, n_test=40, world=world
            )
            make_synthetic(root / "data", cfg)
            store = prepare_store(
                root / "data", root / "store", PrepareOptions(image_size=128), progress=False
            )
            for seed in args.seeds:
                for i, (label, overrides) in enumerate(encoders.items()):
                    run = root / f"run{i}-seed{seed}"
                    extra = [f"seed={seed}", f"epochs={args.epochs}", f"cache_dir={root / 'c'}"]
                    config = load_config(CONFIG, [*overrides, *extra])
                    train(config, store.path, run, progress=False)
                    value = test_score(load_model(run), store, root / "data" / "truth")
                    scores[world].setdefault(label, []).append(value)
                    elapsed = time.perf_counter() - t_start
                    print(f"  {world:<9} seed {seed} {label:<28} {value:6.2f}   ({elapsed:.0f} s)")
    _table(scores, list(encoders), args)
    return scores


def _table(scores: dict[str, dict[str, list[float]]], labels: list[str], args) -> None:
    """Per world and the mean over worlds: mean +- sd over seeds of every encoder."""
    worlds = list(scores)
    print(
        f"\n{args.subjects} subjects x {args.n_train} training images, {args.epochs} epochs, "
        f"seeds {args.seeds}: test score (%), mean +- sd over seeds\n"
    )
    print("| encoder | " + " | ".join(worlds) + " | mean over worlds |")
    print("|---" * (len(worlds) + 2) + "|")
    means = {}
    for label in labels:
        per_seed = np.mean([scores[w][label] for w in worlds], axis=0)  # (n_seeds,)
        means[label] = per_seed
        cells = [
            f"{np.mean(scores[w][label]):.2f} +- {np.std(scores[w][label]):.2f}" for w in worlds
        ]
        print(
            f"| {label} | "
            + " | ".join(cells)
            + f" | {per_seed.mean():.2f} +- {per_seed.std():.2f} |"
        )
    alone = [m for k, m in means.items() if "alone" in k]
    best = max(alone, key=np.mean)
    for label in (k for k in labels if k.startswith("pair")):
        gain = means[label] - best
        print(
            f"{label} - the better trunk alone: {gain.mean():+.2f} (per seed "
            f"{', '.join(f'{g:+.2f}' for g in gain)})"
        )


if __name__ == "__main__":
    main()
