"""Where does the shared multi-subject head beat per-subject ridge? Accuracy vs data size.

Usage: python benchmarks/accuracy.py [--subjects 4] [--n-train 600] [--fractions 0.15 0.4 1.0]

One synthetic dataset with planted truth. For each fraction of each subject's
training split, fits on the same random-init ResNet-18 features (layers 1-3 at
112 px, the ``tiny`` encoder's trunk):

* grouplin_seq: the tiny encoder's phase 1 from the feature cache (configs/demo.yaml with
  the demo's former grouplin_seq readout);
* grouplin: the same with the original entry's readout (same hidden/latent sizes
  and dropout), with the demo's optimizer and with the original's (AdamW betas
  (0.9, 0.99), decay on every parameter, no clipping);
* ridge: per-subject ridge, per-vertex alpha by 5-fold CV, on 2x2-pooled maps;
* devkit: PCA (100 components) of layer 3 (mean-pooled) + OLS, per subject;

and prints the mean noise-normalized test score (%) against the truth.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from brainencoder.baselines.ridge import FeatureSpec, RidgeOptions, fit_ridge_baseline
from brainencoder.data.prepare import prepare_store
from brainencoder.data.synthetic import SyntheticConfig, make_synthetic
from brainencoder.evaluation.evaluate import evaluate_run
from brainencoder.training.config import load_config
from brainencoder.training.loop import train
from readouts import GROUPLIN_SEQ

_GROUPLIN = "model.readout={name: grouplin, hidden_dim: 256, latent_dim: 256, dropout: 0.8}"
_ORIGINAL_OPT = ["betas=[0.9, 0.99]", "decay_all_params=true", "grad_clip=null"]
HEADS = {
    "grouplin_seq": GROUPLIN_SEQ,
    "grouplin": [_GROUPLIN],
    "grouplin+orig_opt": [_GROUPLIN, *_ORIGINAL_OPT],
}


def _score(table) -> float:
    sel = table[(table.subject == "all") & (table.metric == "score") & (table.statistic == "mean")]
    return float(sel.value.iloc[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--n-train", type=int, default=600)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.15, 0.4, 1.0])
    args = parser.parse_args()
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = SyntheticConfig(n_subjects=args.subjects, n_train=args.n_train, n_test=100)
        make_synthetic(tmp / "data", cfg)
        truth = tmp / "data" / "truth"
        store = prepare_store(tmp / "data", tmp / "store", progress=False)
        rows = []
        for fraction in args.fractions:
            n = [round(fraction * len(store.split_rows(s, "train"))) for s in store.names]
            runs = tmp / f"f{fraction}"
            common = [f"train_fraction={fraction}", f"cache_dir={tmp / 'cache'}"]
            for name, extra in HEADS.items():
                train(
                    load_config("configs/demo.yaml", [*common, *extra]),
                    store.path,
                    runs / name,
                    progress=False,
                )
            fit_ridge_baseline(store, runs / "ridge", FeatureSpec(), train_fraction=fraction)
            devkit = FeatureSpec(
                layers=["layer3"], pooling="mean", pca_components=min(100, min(n) - 1)
            )
            fit_ridge_baseline(
                store, runs / "devkit", devkit, RidgeOptions("ols"), train_fraction=fraction
            )
            scores = {
                name: _score(evaluate_run(runs / name, "test", store, truth))
                for name in (*HEADS, "ridge", "devkit")
            }
            rows.append((fraction, n, scores))
            print(f"fraction {fraction}: {scores}", flush=True)
    print(
        f"\n{args.subjects} subjects, test images per subject {cfg.test_counts()}, "
        f"{2 * cfg.n_vertices} vertices; noise-normalized test score (%), mean over vertices"
    )
    names = [*HEADS, "ridge", "devkit"]
    print(f"{'train images / subject':<26} " + " ".join(f"{n:>17}" for n in names))
    for fraction, n, s in rows:
        label = f"{min(n)}-{max(n)} ({fraction:.0%})"
        print(f"{label:<26} " + " ".join(f"{s[k]:17.2f}" for k in names))
    print(f"total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
