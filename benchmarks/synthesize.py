"""Do images synthesized for a region drive its PLANTED response above the best natural image?

Usage: python benchmarks/synthesize.py [--work DIR] [--rois V1v V1d V2v hV4]
       [--against V1v V1d] [--n 8] [--steps 128] [--pool 1000] [--members 3] [--reduced]

The demo's dataset (``SyntheticConfig(held_out=1, categories=True)``, stored at
256 px) and the demo's model (configs/demo.yaml: the tiny encoder, three
seeds, the demo's ensemble) are built in ``--work`` (reused when there). A
pool of natural images is drawn by the dataset's own generator
(:func:`~brainencoder.data.synthetic_images.draw_images`, a seed the dataset
did not use). For each ROI, ``be.synthesize`` makes ``--n`` images from the
ensemble (each checked by the member that did not make it, against the pool);
the planted noise-free response of the ROI (the dataset's own truth model
applied to the pixels: :func:`~brainencoder.data.synthetic_oracle.planted_signal`,
never the encoder) is then compared between the image the ensemble ranks
first among those kept and the pool's best image by the same planted truth.
With ``--against A B`` the same for the contrast A - B. Prints a markdown
table, wall time per ROI and the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def build(work: Path, members: int, reduced: bool) -> tuple[Path, list[Path]]:
    """The demo's dataset, store and phase-1 runs (seeds 0..members-1) in ``work``."""
    from brainencoder.data.prepare import PrepareOptions, prepare_store
    from brainencoder.data.synthetic import SyntheticConfig, make_synthetic
    from brainencoder.runs.run import Run
    from brainencoder.training.config import load_config
    from brainencoder.training.loop import train

    data = work / "data"
    if reduced:
        config = SyntheticConfig(n_train=80, n_test=12, n_vertices=300, image_size=64, seed=0)
    else:
        config = SyntheticConfig(seed=0, held_out=1, categories=True)  # the demo's
    if not (data / "truth" / "synthetic.json").exists():
        make_synthetic(data, config)
    subjects = [f"subj{k + 1:02d}" for k in range(config.n_subjects)]
    prep = PrepareOptions(image_size=64 if reduced else 256)
    store = prepare_store(data, work / "store", prep, subjects=subjects, progress=False)
    extra = ["epochs=2", "model.img_size=64"] if reduced else []
    runs = []
    for seed in range(members):
        run = work / "runs" / f"phase1-seed{seed + 1}"
        if not Run(run).finished:
            cfg = load_config(
                ROOT / "configs" / "demo.yaml", [f"seed={seed}", f"pca_seed={seed}", *extra]
            )
            train(cfg, store.path, run, overwrite=True)
        runs.append(run)
    return data, runs


def draw_pool(work: Path, n_pool: int) -> tuple[Path, np.ndarray, np.ndarray]:
    """``n_pool`` natural images of the generator (uint8 .npy), and their categories."""
    from brainencoder.data.synthetic_images import draw_images

    images, category = draw_images(np.random.default_rng([0, 2026]), n_pool, True, 2026)
    pixels = (np.stack(images) * 255).round().astype(np.uint8)
    path = work / f"pool-{n_pool}.npy"
    if not path.exists():
        np.save(path, pixels)
    return path, pixels, category


def planted_roi(images: np.ndarray, data: Path, subject: str, masks, category=None) -> np.ndarray:
    """The planted ROI value (mean of A, minus mean of B) of uint8 images, shape (n,)."""
    from brainencoder.data.synthetic_oracle import planted_signal

    signal = planted_signal(images / 255.0, data, subject, category=category)
    value = signal[:, masks[0]].mean(1)
    return value - signal[:, masks[1]].mean(1) if len(masks) == 2 else value


def one_row(args, data: Path, runs, pool, rois: list[str]) -> dict:
    """Synthesize for ``rois`` (A, or A - B); compare planted values with the pool's best."""
    import pandas as pd
    from PIL import Image

    import brainencoder as be
    from brainencoder.core.regions import roi_mask
    from brainencoder.data.layout import read_layout

    pool_path, pool_pixels, category = pool
    masks = [roi_mask(read_layout(data, [args.subject])[args.subject], r) for r in rois]
    load = os.getloadavg()[0]
    start, cpu = time.perf_counter(), time.process_time()
    out = be.synthesize(
        runs,
        subject=args.subject,
        rois=rois,
        out=args.work / f"made-{'-'.join(rois)}",
        n=args.n,
        pool=pool_path,
        options={"steps": args.steps, "seed": args.seed},
    )
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    table = pd.read_csv(out["table"])
    made = np.stack([np.asarray(Image.open(out["page"].parent / p)) for p in table.image])
    planted = planted_roi(made, data, args.subject, masks)
    pool_planted = planted_roi(pool_pixels, data, args.subject, masks, category)
    kept = table.kept.to_numpy()
    ranked = np.where(kept, table.ensemble_value, -np.inf) if kept.any() else table.ensemble_value
    top = int(np.argmax(ranked))
    return {
        "roi": " - ".join(rois),
        "kept": f"{int(kept.sum())}/{len(table)}",
        "pool_best_planted": float(pool_planted.max()),
        "top_planted": float(planted[top]),
        "kept_above_pool_best": int((planted[kept] > pool_planted.max()).sum()),
        "beats_pool": bool(planted[top] > pool_planted.max()),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "load_before": load,
        "load_after": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=Path("bench-synthesize"))
    parser.add_argument("--rois", nargs="*", default=["V1v", "V1d", "V2v", "hV4"])
    parser.add_argument(
        "--against", nargs="*", default=["V1v", "V1d"], help="A B: the contrast row (none: skip)"
    )
    parser.add_argument("--subject", default="subj01")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--pool", type=int, default=1000)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reduced", action="store_true", help="a seconds-long smoke run")
    args = parser.parse_args()
    if args.reduced:
        args.n, args.steps, args.pool, args.members = 2, 4, 40, 2
        args.rois, args.against = args.rois[:1], None
    args.work.mkdir(parents=True, exist_ok=True)
    data, runs = build(args.work, args.members, args.reduced)
    pool = draw_pool(args.work, args.pool)
    queries = [[roi] for roi in args.rois]
    if args.against and len(args.against) != 2:
        parser.error("--against takes two ROIs (or none)")
    if args.against:
        queries.append(list(args.against))
    print(
        f"{args.members} members, n={args.n}, steps={args.steps}, pool={args.pool}, "
        f"cpus {os.cpu_count()}"
    )
    print(
        "| ROI | kept | pool's best (planted) | top kept image (planted) | kept above pool best "
        "| beats the pool | wall s | CPU s | load before/after |"
    )
    print("|---|---|---:|---:|---:|---|---:|---:|---|", flush=True)
    rows = []
    for rois in queries:  # each row as soon as it is measured
        r = one_row(args, data, runs, pool, rois)
        rows.append(r)
        print(
            f"| {r['roi']} | {r['kept']} | {r['pool_best_planted']:.3f} | {r['top_planted']:.3f} "
            f"| {r['kept_above_pool_best']} | {'yes' if r['beats_pool'] else 'no'} "
            f"| {r['seconds']:.0f} | {r['cpu_seconds']:.0f} "
            f"| {r['load_before']:.1f}/{r['load_after']:.1f} |",
            flush=True,
        )
    name = "-".join("_".join(q) for q in queries)
    (args.work / f"results-{name}.json").write_text(json.dumps(rows, indent=2))
    single = [r for r in rows if " - " not in r["roi"]]
    print(f"ROIs beating the pool's best: {sum(r['beats_pool'] for r in single)} of {len(single)}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
