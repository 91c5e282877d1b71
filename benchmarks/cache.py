"""Feature cache dtypes: size, epoch time from the cache and test score, float16 vs int8.

Usage: python benchmarks/cache.py [--seeds 0 1 2] [--subjects 4] [--n-train 250]

One synthetic dataset; for every seed and ``cache_dtype`` (float16, int8),
phase 1 of the demo (tiny encoder, 2 views, 20 epochs from the cache) and the
mean noise-normalized test score (%) against the planted truth. Prints cache
bytes per image and view (measured files; and at the reference shape, 6 eva02
layers of 768 x 257, from the layout), the median epoch time from the cache
and the score, mean +- sd over seeds, side by side.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from brainencoder.data.prepare import PrepareOptions, prepare_store
from brainencoder.data.synthetic import SyntheticConfig, make_synthetic
from brainencoder.inference.cache import CACHE_DTYPES
from brainencoder.inference.quantize import bytes_per_view
from brainencoder.runs.load import load_model
from brainencoder.training.config import load_config
from brainencoder.training.loop import train
from readouts import GROUPLIN_SEQ, test_score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--n-train", type=int, default=250)
    args = parser.parse_args()
    rows: dict[str, dict[str, list[float]]] = {d: {} for d in CACHE_DTYPES}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = SyntheticConfig(n_subjects=args.subjects, n_train=args.n_train, n_test=60)
        make_synthetic(tmp / "data", cfg)
        truth = tmp / "data" / "truth"
        store = prepare_store(
            tmp / "data", tmp / "store", PrepareOptions(image_size=128), progress=False
        )
        for seed in args.seeds:
            for dtype in CACHE_DTYPES:
                cache = tmp / f"cache-{dtype}-{seed}"
                run = tmp / f"run-{dtype}-{seed}"
                overrides = [
                    *GROUPLIN_SEQ,
                    f"seed={seed}",
                    f"cache_dtype={dtype}",
                    f"cache_dir={cache}",
                ]
                train(load_config("configs/demo.yaml", overrides), store.path, run, progress=False)
                (folder,) = cache.iterdir()
                manifest = json.loads((folder / "manifest.json").read_text())
                n = len(manifest["image_rows"]) * manifest["n_views"]
                size = sum(f.stat().st_size for f in folder.glob("layer*")) / n
                records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
                epoch = np.median([r["epoch_seconds"] for r in records if "epoch_seconds" in r])
                score = test_score(load_model(run), store, truth)
                for key, value in (("bytes", size), ("epoch_s", epoch), ("score", score)):
                    rows[dtype].setdefault(key, []).append(value)
                print(
                    f"seed {seed} {dtype}: {size:.0f} B/image, {epoch:.2f} s/epoch, "
                    f"score {score:.2f}",
                    flush=True,
                )
    reference = [(768, 257)] * 6
    print(
        f"\n{args.subjects} subjects x {args.n_train} images, tiny encoder (112 px, layers "
        f"1-3), 2 views, 20 epochs; mean +- sd over seeds {args.seeds}"
    )
    print(
        "| cache_dtype | bytes / image / view (tiny) | bytes / image / view (eva02 "
        "reference) | epoch from the cache | test score |"
    )
    print("|---|---:|---:|---:|---:|")
    for dtype, r in rows.items():
        print(
            f"| {dtype} | {np.mean(r['bytes']):,.0f} | {bytes_per_view(reference, dtype):,} | "
            f"{np.mean(r['epoch_s']):.2f} +- {np.std(r['epoch_s']):.2f} s | "
            f"{np.mean(r['score']):.2f} +- {np.std(r['score']):.2f} |"
        )


if __name__ == "__main__":
    main()
