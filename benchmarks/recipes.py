"""Readout recipes past `point`: test score, CPU training time and step time, side by side.

Usage: python benchmarks/recipes.py [--seeds 0 1 2] [--only NAME ...] [--worlds W ...]
       [--subjects 4] [--n-train 150] [--n-test 60] [--image-size 128] [--extra KEY=VALUE ...]
       [--reduced]

Each recipe is a set of overrides of `configs/demo.yaml` (the tiny encoder from
its feature cache, 20 epochs), trained on the planted-truth dataset of
`benchmarks/readouts.py` (4 subjects x 150 training images, 60 test images,
categories) of every planted world (`--worlds`, default all: see
docs/recipes-worlds.md) for every seed; an ensemble recipe trains several seeds
and predicts their mean. Reported per recipe, all measured in this one run:

* test score: the devkit's noise-normalized score (%) against the planted truth,
  mean +- sd over seeds (the planted signal itself scores about 73 here: the
  test responses are noisy);
* train s: the training loop's wall time (feature caching excluded: one cache
  per trunk serves every recipe), summed over an ensemble's members, mean over
  seeds, and its ratios to `point` with 32 channels and 14 x 14 maps (p14) and
  to `point` as filed (its earlier forward pass, benchmarks/point_as_filed.py);
* step s: one training step (forward, backward, AdamW) of the readout alone at
  the demo's shape (batch 64; the tiny encoder's three maps at 112 px: 64 x 28 x
  28, 128 x 14 x 14, 256 x 7 x 7; the demo's 2,400 group vertices, 3 subjects),
  best of 5, times an ensemble's members, and its ratio to `grouplin_seq`'s.

The scores are then shown per world with their mean over worlds, beside two
rows per world: a per-vertex ridge on the world's true planted features (the
ceiling a readout reaches with the right features) and the planted signal
itself (the noise's limit); and a "leave one world out" view: for each world,
the recipe chosen by the mean of the others and its score on the held-out one.

Ideas that did not help stay in the table with their numbers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import point_as_filed  # noqa: F401 (registers the readout point_as_filed)
from brainencoder.models.readouts import create_readout
from brainencoder.runs.ensemble import EnsembleModel
from brainencoder.runs.load import load_model
from brainencoder.training.config import load_config
from brainencoder.training.loop import train
from brainencoder.training.losses import masked_mse
from readouts import GROUPLIN_SEQ, pca_size, test_score
from worlds import (
    WORLDS,
    add_worlds_argument,
    ceiling_score,
    planted_score,
    print_leave_one_world_out,
    print_world_table,
    world_dataset,
)

# readouts are pinned whole: an override naming configs/demo.yaml's readout (point) merges
# into its options, so a row that leaves max_grid out would inherit the demo's
POINT = "name: point, channels: 32, max_grid: 0"  # the full maps
P14 = "name: point, channels: 32, max_grid: 14"
SMALL = "name: point, channels: 16, max_grid: 14"  # the demo's readout
LR = "lr=1e-2"
OLD_WD = "weight_decay=0.5"  # configs/demo.yaml's until the 16-channel recipe
TRAIN_VAL = "train_on=[train, val]"  # a final fit on the val images too (no epoch selection)
EVERY = "train_on=[train, val, testval]"  # ... and on the testval ones: every training image


@dataclass(frozen=True)
class Recipe:
    """Overrides of configs/demo.yaml; ``members`` > 1: an ensemble of that many seeds.

    Ensemble members are trained with seeds ``seed + 1000 * j`` (each with its
    own random trunk, as every seed has) and predict the mean of their
    predictions (:class:`~brainencoder.runs.ensemble.EnsembleModel`).
    """

    overrides: tuple[str, ...]
    members: int = 1


def _p14(options: str = "", *more: str) -> Recipe:
    """``point`` with 32 channels and maps pooled to 14 x 14, plus ``options``."""
    return Recipe((f"model.readout={{{P14}{options}}}", *more, LR, OLD_WD))


def _every(*more: str, members: int = 1) -> Recipe:
    """The demo's recipe (its readout, trained on every image) with ``more`` overrides."""
    return Recipe((f"model.readout={{{SMALL}}}", LR, "weight_decay=2.0", EVERY, *more), members)


# a random-init ResNet-18 member of model.trunks, its name to be closed by the row
RESNET = "{trunk: resnet18, layers: [layer1, layer2, layer3], name: "

RECIPES = {
    "grouplin_seq (the old demo's)": Recipe(tuple(GROUPLIN_SEQ)),
    "point as filed (32 ch, full maps)": Recipe(
        ("model.readout={name: point_as_filed, channels: 32, max_grid: 0}", LR, OLD_WD)
    ),
    "point, 32 ch, full maps": Recipe((f"model.readout={{{POINT}}}", LR, OLD_WD)),
    "point as filed (32 ch, 14x14)": Recipe(
        ("model.readout={name: point_as_filed, channels: 32, max_grid: 14}", LR, OLD_WD)
    ),
    "point, 32 ch, 14x14": _p14(),
    "point, 32 ch, 7x7": Recipe(
        ("model.readout={name: point, channels: 32, max_grid: 7}", LR, OLD_WD)
    ),
    "  14x14, softplus output": _p14(", output: softplus"),
    "  14x14, centre-surround": _p14(", surround: true"),
    "  14x14, shared rank 8": _p14(", shared_rank: 8"),
    "  14x14, softplus + shared rank 8": _p14(", output: softplus, shared_rank: 8"),
    "  14x14 + stem layer": _p14("", "model.layers=[act1, layer1, layer2, layer3]"),
    "  14x14, all four": _p14(", output: softplus, surround: true, shared_rank: 8"),
    "point, 16 ch, 14x14": Recipe((f"model.readout={{{SMALL}}}", LR, OLD_WD)),
    "point, 16 ch, 14x14, wd 2": Recipe((f"model.readout={{{SMALL}}}", LR, "weight_decay=2.0")),
    "  the same, 40 epochs": Recipe(
        (f"model.readout={{{SMALL}}}", LR, "weight_decay=2.0", "epochs=40")
    ),
    "  the same, ensemble of 3 seeds": Recipe(
        (f"model.readout={{{SMALL}}}", LR, "weight_decay=2.0"), members=3
    ),
    "  the same, trained on train + val": Recipe(
        (f"model.readout={{{SMALL}}}", LR, "weight_decay=2.0", TRAIN_VAL)
    ),
    "  train + val, ensemble of 3 seeds": Recipe(
        (f"model.readout={{{SMALL}}}", LR, "weight_decay=2.0", TRAIN_VAL), members=3
    ),
    "  the same, trained on every image": _every(),
    "  every image, 40 epochs": _every("epochs=40"),
    "  every image, Pearson loss": _every("loss={name: pearson}"),
    "  every image, Pearson + MSE": _every("loss={name: pearson, mse_weight: 1.0}"),
    "  every image, no crops": _every("crop_scale=[1.0, 1.0]", "cache_views=1"),
    "  every image, deep random trunk": _every("model.trunk_kwargs={zero_init_last: false}"),
    "  every image, two random ResNet-18s": _every(f"model.trunks=[{RESNET}a}}, {RESNET}b}}]"),
    "  every image, ensemble of 3 (the demo's)": _every(members=3),
    "  every image, smoothness 1": _every("smoothness=1"),
    "  every image, smoothness 3": _every("smoothness=3"),
    "  every image, smoothness 10": _every("smoothness=10"),
    "  smoothness 1, ensemble of 3": _every("smoothness=1", members=3),
    "  every image, ensemble of 5": _every(members=5),
}
SHAPES = [(64, 28, 28), (128, 14, 14), (256, 7, 7)]
STEM = (64, 56, 56)  # the ResNet stem (act1) at 112 px, for recipes that read it


BASE = "grouplin_seq (the old demo's)"
REDUCED_WORLDS = ["retino", "shapes"]
POINT_ROW = "point, 32 ch, 14x14"
FILED_ROW = "point as filed (32 ch, full maps)"


def _readout_options(overrides: tuple[str, ...]) -> dict:
    """The readout of a recipe, as create_readout's name and options."""
    cfg = load_config("configs/demo.yaml", list(overrides))
    return dict(cfg.encoder_config().readout)


def step_seconds(recipe: Recipe, n_vertices: int, batch: int, repeats: int = 5) -> float:
    """One readout training step at the demo's shape (best of ``repeats``), times ``members``."""
    options = _readout_options(recipe.overrides)
    name = options.pop("name")
    shapes = [STEM, *SHAPES] if any("act1" in o for o in recipe.overrides) else SHAPES
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
    return min(times) * recipe.members


def _ratio(value: float, base: float | None) -> float:
    return value / base if base else float("nan")


def _train_recipe(name: str, recipe: Recipe, seed: int, data, args) -> tuple[float, float]:
    """Train ``recipe`` (its members) on one world's store; (test score, training seconds)."""
    # the train split only and no smoothness prior, unless the recipe says otherwise
    # (the demo's config trains on every image)
    overrides = ["train_on=[train]", "smoothness=0", *recipe.overrides, *args.extra]
    if args.reduced:
        overrides += ["model.img_size=32", "batch_size=16"]
    overrides += pca_size(name, args)
    models, spent = [], 0.0
    for member in range(recipe.members):
        run = data.root.parent / f"seed{seed}" / f"{name.strip().replace(' ', '_')}-{member}"
        common = [
            f"seed={seed + 1000 * member}",
            f"cache_dir={data.cache}",
            f"epochs={args.epochs}",
        ]
        config = load_config("configs/demo.yaml", [*common, *overrides])
        spent += train(config, data.store.path, run, progress=False)["seconds"]
        models.append(load_model(run))
    model = models[0] if len(models) == 1 else EnsembleModel(models)
    return test_score(model, data.store, data.truth), spent


def _print_tables(recipes, by_world, seconds, steps, worlds, limits) -> None:
    bases = [np.mean(seconds[r]) if r in seconds else None for r in (POINT_ROW, FILED_ROW)]
    print(
        f"\n| {'recipe':<42} | {'mean over worlds':>16} | {'train s':>7} | {'/ p14':>7} "
        f"| {'/ as filed':>10} | {'step s':>6} | {'step / grouplin_seq':>19} |"
    )
    for name in recipes:
        mean = np.mean([np.mean(by_world[name][w]) for w in worlds])
        train_s = float(np.mean(seconds[name]))
        print(
            f"| {name:<42} | {mean:16.2f} | {train_s:7.1f} "
            f"| {_ratio(train_s, bases[0]):7.2f} | {_ratio(train_s, bases[1]):10.2f} "
            f"| {steps[name]:6.3f} | {_ratio(steps[name], steps.get(BASE)):19.2f} |"
        )
    print("\ntest score (%) per world, mean +- sd over seeds, and the mean over worlds")
    print_world_table({**by_world, **limits}, worlds)
    print_leave_one_world_out(by_world, worlds)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="*", help="recipes to run (default: all)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--reduced", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--steps-only", action="store_true", help="only the step times")
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--n-train", type=int, default=150, help="training images of subj01")
    parser.add_argument("--n-test", type=int, default=60, help="test images of subj01")
    parser.add_argument("--image-size", type=int, default=128, help="the store's image size")
    parser.add_argument(
        "--extra", nargs="*", default=[], help="overrides added to every recipe (a smaller run)"
    )
    add_worlds_argument(parser)
    args = parser.parse_args(argv)
    recipes = {k: v for k, v in RECIPES.items() if not args.only or k in args.only}
    worlds = args.worlds or WORLDS.names()
    n_subjects, n_train, n_test, size = args.subjects, args.n_train, args.n_test, args.image_size
    if args.reduced:  # two worlds unless --worlds names them: enough for every table
        args.seeds, args.epochs, n_subjects, n_train, n_test, size = [0], 1, 2, 40, 8, 48
        worlds = args.worlds or REDUCED_WORLDS
    steps = {k: step_seconds(v, 2400 if not args.reduced else 400, 64) for k, v in recipes.items()}
    if args.steps_only:
        for name, value in steps.items():
            print(f"{name:<40} {value:8.3f} s {_ratio(value, steps.get(BASE)):6.2f}x {BASE}")
        return {"steps": steps}
    by_world: dict[str, dict[str, list[float]]] = {k: {w: [] for w in worlds} for k in recipes}
    seconds: dict[str, list[float]] = {k: [] for k in recipes}
    limits: dict[str, dict[str, list[float]]] = {"ceiling: ridge on true features": {}}
    limits["planted signal (noise limit)"] = {}
    t_start = time.perf_counter()
    cfg = dict(n_subjects=n_subjects, n_train=n_train, n_test=n_test, categories=True)
    with tempfile.TemporaryDirectory() as tmp:
        for world in worlds:
            data = world_dataset(Path(tmp), world, cfg, size)
            limits["ceiling: ridge on true features"][world] = [ceiling_score(data)]
            limits["planted signal (noise limit)"][world] = [planted_score(data)]
            for seed in args.seeds:
                for name, recipe in recipes.items():
                    score, spent = _train_recipe(name, recipe, seed, data, args)
                    by_world[name][world].append(score)
                    seconds[name].append(spent)
                    print(
                        f"  {world} seed {seed} {name:<40} {score:6.2f} "
                        f"({spent:.0f} s; {time.perf_counter() - t_start:.0f} s in all)",
                        flush=True,
                    )
    print(f"\ntest score (%) over seeds {args.seeds}; times on {torch.get_num_threads()} threads")
    _print_tables(recipes, by_world, seconds, steps, worlds, limits)
    # "scores": per seed, the mean over worlds
    scores = {
        k: [float(np.mean([v[w][i] for w in worlds])) for i in range(len(args.seeds))]
        for k, v in by_world.items()
    }
    result = {
        "scores": scores,
        "by_world": by_world,
        "limits": limits,
        "seconds": seconds,
        "steps": steps,
        "worlds": worlds,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
