"""Share of phase-2 step time spent waiting for data, serial vs prefetched batches.

Usage: python benchmarks/data_wait.py [--n-train 300] [--epochs 2] [--workers 2] [--reduced]

Phase 2 trains from images: every step reads its images from the store and
crops them (``TrainStep.prepare``) before the model runs. This trains the
``tiny`` encoder's phase 2 (``train_trunk=true``, no feature cache) on one
synthetic dataset, once with ``num_workers=0`` (the batch is prepared in the
loop, between steps) and once with ``--workers`` threads preparing the next
batches while the current step runs. The loop records per epoch its training
seconds and the seconds it waited for its next batch (``epoch_seconds`` and
``data_wait_seconds`` in ``metrics.jsonl``); the table gives both and the
share of the step time spent waiting, side by side, and their ratio. The two
runs' weights are identical (the crops are seeded per step): only time differs.

``--reduced`` runs a few seconds (32 px images, one epoch) so the script is tested.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from brainencoder.data.prepare import PrepareOptions, prepare_store
from brainencoder.data.synthetic import SyntheticConfig, make_synthetic
from brainencoder.runs.run import Run
from brainencoder.training.config import load_config
from brainencoder.training.loop import train


def data_wait(store: Path, run: Path, overrides: list[str], workers: int) -> dict:
    """Train once with ``num_workers=workers``; seconds training and waiting for data."""
    config = load_config(None, [*overrides, f"num_workers={workers}"])
    summary = train(config, store, run, progress=False)
    epochs = [r for r in Run(run).read_metrics() if "data_wait_seconds" in r]
    seconds = sum(r["epoch_seconds"] for r in epochs)
    wait = sum(r["data_wait_seconds"] for r in epochs)
    return {
        "workers": workers,
        "steps": summary["steps"],
        "train_s": seconds,
        "wait_s": wait,
        "share": wait / seconds,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-train", type=int, default=300, help="images of the first subject")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="prefetching threads")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--reduced", action="store_true", help="a few seconds on the CPU")
    args = parser.parse_args(argv)
    overrides = [
        "encoder=tiny",
        "train_trunk=true",
        "cache_features=false",
        f"epochs={args.epochs}",
        f"batch_size={args.batch_size}",
        "lr=1e-4",
        "crop_scale=[0.5, 1]",
        f"device={args.device}",
    ]
    synthetic = SyntheticConfig(n_train=args.n_train, n_test=10, image_size=256)
    image_size = 256
    if args.reduced:
        synthetic = SyntheticConfig(
            n_subjects=2, n_train=40, n_test=4, n_vertices=60, image_size=48
        )
        image_size = 48
        overrides += ["epochs=1", "batch_size=16", "model.img_size=32"]
        overrides += ["model.readout.hidden_dim=8", "model.readout.latent_dim=4"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_synthetic(tmp / "data", synthetic)
        store = prepare_store(
            tmp / "data", tmp / "store", PrepareOptions(image_size=image_size), progress=False
        )
        rows = [data_wait(store.path, tmp / f"w{w}", overrides, w) for w in (0, args.workers)]
    config = load_config(None, overrides)
    print(
        f"phase 2 of the tiny encoder ({config.encoder_config().img_size} px crops of "
        f"{image_size} px store images), batch {config.batch_size}, {rows[0]['steps']} steps; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print("| num_workers | training s | waiting for data s | share of step time |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['workers']} | {r['train_s']:.2f} | {r['wait_s']:.3f} | {r['share']:.1%} |")
    ratio = rows[0]["share"] / max(rows[1]["share"], 1e-9)
    print(
        f"data-wait share: {rows[0]['share']:.1%} serial, {rows[1]['share']:.1%} with "
        f"{args.workers} workers (ratio {ratio:.1f})"
    )
    return rows


if __name__ == "__main__":
    main()
