"""Phase-1 epoch time with and without the feature cache, and samples/s per config.

Usage: python benchmarks/train.py [--n-train 300] [--skip-reference]

1. On one synthetic dataset, trains the ``tiny`` encoder's phase 1 for a few
   epochs from images (trunk forward every step) and from the feature cache,
   and prints seconds per epoch (training steps only) and their ratio, plus
   the one-off cost of building the cache.
2. Training samples/s of one optimizer step for the ``tiny`` and reference
   ``eva02_base`` configurations (random weights; 8 subjects; 39,548 group
   vertices for the reference), phase 1 from images, phase 1 from cached
   features (head only), and phase 2 (trunk attention trainable).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from brainencoder.core.space import GroupSpace
from brainencoder.data.loader import ArrayBatches
from brainencoder.data.prepare import prepare_store
from brainencoder.data.synthetic import SyntheticConfig, make_synthetic
from brainencoder.inference.cache import InMemoryFeatures
from brainencoder.models.encoder import create_encoder
from brainencoder.training.config import load_config
from brainencoder.training.distributed import DistInfo
from brainencoder.training.loop import train
from brainencoder.training.losses import create_loss
from brainencoder.training.step import TrainStep, make_optimizer
from readouts import GROUPLIN_SEQ


def _epoch_seconds(run: Path) -> list[float]:
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["epoch_seconds"] for r in records if "epoch_seconds" in r]


def cache_ratio(n_train: int, epochs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_synthetic(tmp / "data", SyntheticConfig(n_train=n_train, n_test=10, image_size=256))
        store = prepare_store(tmp / "data", tmp / "store", progress=False)
        common = [f"epochs={epochs}", "batch_size=64", f"cache_dir={tmp / 'cache'}"]
        t0 = time.perf_counter()
        train(
            load_config("configs/demo.yaml", [*common, *GROUPLIN_SEQ, "cache_features=true"]),
            store.path,
            tmp / "cached",
            progress=False,
        )
        cached_total = time.perf_counter() - t0
        train(
            load_config("configs/demo.yaml", [*common, *GROUPLIN_SEQ, "cache_features=false"]),
            store.path,
            tmp / "images",
            progress=False,
        )
        cached = np.median(_epoch_seconds(tmp / "cached"))
        images = np.median(_epoch_seconds(tmp / "images"))
        n = sum(len(store.split_rows(s, "train")) for s in store.names)
        build = cached_total - sum(_epoch_seconds(tmp / "cached"))
    print(f"phase 1, tiny encoder, {n} training samples/epoch, 2 cached views, batch 64")
    print(f"  from images (trunk every step): {images:7.2f} s/epoch")
    print(f"  from the feature cache        : {cached:7.2f} s/epoch")
    print(f"  speed-up per epoch            : {images / cached:7.1f}x")
    print(
        f"  one-off (cache build + PCA + validation, whole cached run minus epochs): {build:.1f} s"
    )


def _space(n_subjects: int, n_lh: int, n_rh: int) -> GroupSpace:
    masks = {}
    for k in range(n_subjects):
        masks[f"subj{k + 1:02d}"] = {}
        for hemi, n in (("lh", n_lh), ("rh", n_rh)):
            m = np.zeros(163842, bool)
            m[:n] = True
            masks[f"subj{k + 1:02d}"][hemi] = m
    return GroupSpace.from_masks(masks)


def step_rates(name: str, space: GroupSpace, batch: int, **overrides) -> None:
    """Samples/s of the real training step (TrainStep) in its three uses."""
    torch.manual_seed(0)
    model = create_encoder(name, space, pretrained=False, **overrides)
    size = model.input_size
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    subject = rng.integers(0, len(space.subjects), batch)
    masks = space.masks()
    batches = ArrayBatches(
        images, subject, rng.standard_normal((batch, space.n_vertices)), masks[subject]
    )
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        feats = InMemoryFeatures([f[None] for f in model.eval().forward_features(x)])
    positions = np.arange(batch)

    def run(mode: str) -> float:
        """Mean samples/s of 2 optimizer steps after one warm-up step."""
        phase2 = mode == "phase2"
        model.train()
        model.set_trunk_mode(phase2)
        for n, p in model.trunk.named_parameters():  # phase 2: attention (ViT) / last stage
            p.requires_grad_(phase2 and (".attn." in n or "layer3" in n))
        config = load_config(None, [f"batch_size={batch}", "crop_scale=[1, 1]"])
        module = model.readout if mode == "cached" else model
        step = TrainStep(
            module,
            model,
            batches,
            feats if mode == "cached" else None,
            create_loss(config.loss),
            make_optimizer(module, config, torch.device("cpu")),
            torch.amp.GradScaler("cpu", enabled=False),
            config,
            torch.device("cpu"),
            DistInfo(),
        )
        times = []
        for i in range(3):
            t0 = time.perf_counter()
            step(positions, 0, i)
            times.append(time.perf_counter() - t0)
        return batch / float(np.mean(times[1:]))

    rates = {mode: run(mode) for mode in ("images", "cached", "phase2")}
    print(
        f"  {name:<10} input {size}px, batch {batch}: phase 1 from images "
        f"{rates['images']:8.1f} samples/s | from cache {rates['cached']:8.1f} samples/s | "
        f"phase 2 {rates['phase2']:8.1f} samples/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-train", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--skip-reference", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    cache_ratio(args.n_train, args.epochs)
    print("one training step (random weights), samples/s:")
    step_rates("tiny", _space(3, 1200, 1200), 64)
    if not args.skip_reference:
        step_rates("eva02_base", _space(8, 19004, 20544), 16)


if __name__ == "__main__":
    main()
