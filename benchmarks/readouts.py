"""Readouts, losses, phase 2 vs LoRA, ensembles and soups on one planted truth.

Usage: python benchmarks/readouts.py [--seeds 0 1 2] [--subjects 4] [--n-train 150]

One synthetic dataset. For every seed (the seed sets the random ResNet-18 trunk,
the readout's initialisation and the data order; every model of one seed shares
its trunk), trains from the feature cache with configs/demo.yaml (20 epochs):

* ridge: per-subject ridge on 2x2-pooled trunk maps (alpha per vertex by CV);
* grouplin, grouplin_seq, point, roi_query: each with MSE and with SmoothL1
  (beta 0.01, the first place's loss);

then from the seed's grouplin_seq (MSE) phase 1, two epochs of
* phase 2: the trunk's layer3 unfrozen (configs/demo_phase2.yaml);
* LoRA: rank 4 on layer3's convolutions instead (trunk frozen);

and, for the best readout and loss (by mean test score), three short
continuations of seed 0's run (5 epochs, seeds 10-12, a third of its lr) and
their ensemble (mean prediction), uniform soup and greedy soup.

Prints the mean noise-normalized test score (%) against the truth, mean and
standard deviation over seeds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from brainencoder.baselines.ridge import FeatureSpec, fit_ridge_baseline
from brainencoder.data.layout import HEMIS
from brainencoder.data.prepare import PrepareOptions, prepare_store
from brainencoder.data.synthetic import SyntheticConfig, make_synthetic
from brainencoder.evaluation.submission import subject_test_scores
from brainencoder.runs.ensemble import EnsembleModel
from brainencoder.runs.load import load_model
from brainencoder.runs.soup import soup_runs
from brainencoder.training.config import load_config
from brainencoder.training.loop import train

# learning rates (and roi_query's queries per region) chosen on a smaller dataset
# (2 subjects x 250 images, seed 0) among 2e-3, 5e-3, 1e-2 (see the README)
# configs/demo.yaml's settings when these numbers were recorded (it moved on since)
PINNED = ["weight_decay=0.5", "train_on=[train]"]
# the demo's phase 1 before its readout became point (configs/demo.yaml with these)
GROUPLIN_SEQ = [
    "model.readout={name: grouplin_seq, hidden_dim: 256, latent_dim: 256, dropout: 0.8}",
    "lr=2e-3",
    *PINNED,
]
READOUTS = {
    "grouplin": [
        "model.readout={name: grouplin, hidden_dim: 256, latent_dim: 256, dropout: 0.8}",
        "lr=1e-2",
        *PINNED,
    ],
    "grouplin_seq": GROUPLIN_SEQ,  # the demo's readout until it moved to point
    "point": ["model.readout={name: point, channels: 32, max_grid: 0}", "lr=1e-2", *PINNED],
    "roi_query": [
        "model.readout={name: roi_query, dim: 64, queries_per_region: 8}",
        "lr=5e-3",
        *PINNED,
    ],
}
LOSSES = {"mse": [], "smooth_l1": ["loss={name: smooth_l1, beta: 0.01}"]}
LORA = "lora={rank: 4, alpha: 8, targets: ['layer3.*.conv*', 'layer3.0.downsample.0']}"


def test_score(model, store, truth: Path) -> float:
    """Devkit score (%): mean over every vertex of every subject's test predictions."""
    scores = []
    for name in store.names:
        rows = store.subject(name).test_rows
        pred = model.predict(store.read_images(rows), name)
        scores.append(subject_test_scores({h: pred[h] for h in HEMIS}, truth, name)[0])
    return float(np.concatenate(scores).mean())


def _train(config: str | None, overrides: list[str], store, run: Path) -> Path:
    # the train split only: these runs are compared, continued and souped on val
    train(load_config(config, ["train_on=[train]", *overrides]), store.path, run, progress=False)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--n-train", type=int, default=150)
    parser.add_argument("--epochs", type=int, default=20, help="phase 1 (the demo's: 20)")
    args = parser.parse_args()
    t_start = time.perf_counter()
    results: dict[str, list[float]] = {}

    def record(label: str, value: float) -> None:
        results.setdefault(label, []).append(value)
        print(f"  {label:<28} {value:6.2f}   ({time.perf_counter() - t_start:.0f} s)", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = SyntheticConfig(
            n_subjects=args.subjects, n_train=args.n_train, n_test=60, categories=True
        )
        make_synthetic(tmp / "data", cfg)
        truth = tmp / "data" / "truth"
        store = prepare_store(
            tmp / "data", tmp / "store", PrepareOptions(image_size=128), progress=False
        )
        cache = f"cache_dir={tmp / 'cache'}"
        for seed in args.seeds:
            print(f"seed {seed}", flush=True)
            runs = tmp / f"seed{seed}"
            common = [f"seed={seed}", cache, f"epochs={args.epochs}"]
            fit_ridge_baseline(store, runs / "ridge", FeatureSpec(seed=seed), seed=seed)
            record("ridge", test_score(load_model(runs / "ridge"), store, truth))
            for readout, r_args in READOUTS.items():
                for loss, l_args in LOSSES.items():
                    run = _train(
                        "configs/demo.yaml",
                        [*common, *r_args, *l_args],
                        store,
                        runs / readout / loss,
                    )
                    record(f"{readout} {loss}", test_score(load_model(run), store, truth))
            start = runs / "grouplin_seq" / "mse"
            p2 = [f"seed={seed}", f"init_from={start}"]
            run = _train("configs/demo_phase2.yaml", p2, store, runs / "phase2")
            record("phase 2 (layer3 unfrozen)", test_score(load_model(run), store, truth))
            lora = [*p2, "train_trunk=false", "freeze=[]", "lr=1e-3", LORA]
            run = _train("configs/demo_phase2.yaml", lora, store, runs / "lora")
            record("phase 2 LoRA (rank 4)", test_score(load_model(run), store, truth))
        best = max(
            (k for k in results if " " in k and not k.startswith("phase")),
            key=lambda k: np.mean(results[k]),
        )
        readout, loss = best.split(" ")
        print(f"best readout: {best}; continuations, ensemble and soups of seed 0", flush=True)
        start = tmp / f"seed{args.seeds[0]}" / readout / loss
        demo = load_config("configs/demo.yaml", PINNED)
        lr = next((float(a[3:]) for a in READOUTS[readout] if a.startswith("lr=")), demo.lr)
        continue_args = [
            f"init_from={start}",
            "epochs=5",
            f"lr={lr / 3}",
            f"weight_decay={demo.weight_decay}",
            f"batch_size={demo.batch_size}",
            "cache_features=true",
            "cache_views=2",
            cache,
            *LOSSES[loss],
        ]
        ingredients = [
            _train(None, [*continue_args, f"seed={s}"], store, tmp / "soup" / f"ft{s}")
            for s in (10, 11, 12)
        ]
        models = [load_model(r) for r in ingredients]
        singles = [test_score(m, store, truth) for m in models]
        record(f"{best}: best continuation", max(singles))
        record(f"{best}: ensemble of 3", test_score(EnsembleModel(models), store, truth))
        for kind, greedy in (("uniform", False), ("greedy", True)):
            soup_runs(ingredients, tmp / "soup" / kind, greedy=greedy)
            model = load_model(tmp / "soup" / kind)
            record(f"{best}: {kind} soup", test_score(model, store, truth))
    print(
        f"\n{args.subjects} subjects x {args.n_train} training images (image-consistent splits), "
        f"test images per subject {cfg.test_counts()}, {2 * cfg.n_vertices} vertices; "
        "devkit score (%) on the test set; mean +- sd over seeds"
    )
    for label, values in results.items():
        spread = f"+- {np.std(values):.2f}" if len(values) > 1 else ""
        print(f"| {label} | {np.mean(values):.2f} {spread} | {len(values)} |")
    print(f"total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
