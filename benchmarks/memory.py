"""Peak memory of every step at the full challenge shape.

Usage: python benchmarks/memory.py WORKDIR [--image-size 32] [--subjects 8]

Writes a dataset in the challenge layout with the full challenge's shape
(8 subjects; 9,841 / 9,841 / 9,082 / 8,779 / 9,841 / 9,082 / 9,841 / 8,779
training images; 19,004 + 20,544 vertices, subj06 and subj08 missing a few;
about 1,000 images shared by all subjects; test images as in the challenge),
with small PNGs to save disk (fMRI: low-rank signal + noise, float32, about
12 GiB), then runs each step as its own process and reports its peak RSS
(from ``os.wait4``): prepare, group PCA (2,048 components), one epoch of head
training from cached features on a subset of subjects, evaluation, and
submission. Needs about 40 GiB of free disk in WORKDIR. Goal: every step
under 16 GiB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TRAIN = [9841, 9841, 9082, 8779, 9841, 9082, 9841, 8779]
TEST = [159, 159, 293, 395, 159, 293, 159, 395]
VERTS = {"lh": 19004, "rh": 20544}
MISSING = {5: {"lh": 26, "rh": 324}, 7: {"lh": 23, "rh": 14}}  # subj06, subj08


def write_dataset(root: Path, n_subjects: int, image_size: int) -> None:
    from PIL import Image

    if (root / "done").exists():
        return
    rng = np.random.default_rng(0)
    n_fs = 163842
    rank = 64
    pool = 73000
    shared = np.arange(1000)
    basis = {h: rng.normal(size=(rank, VERTS[h])).astype(np.float32) for h in VERTS}
    latents = rng.normal(size=(pool, rank)).astype(np.float32)
    written = set()
    img_dir = root / "_pool"
    img_dir.mkdir(parents=True, exist_ok=True)
    order = rng.permutation(np.arange(1000, pool))
    start = 0
    for k in range(n_subjects):
        name = f"subj{k + 1:02d}"
        own = order[start : start + TRAIN[k] - 1000 + TEST[k]]
        start += len(own)
        train_ids = np.sort(np.concatenate([shared, own[: TRAIN[k] - 1000]]))
        test_ids = np.sort(own[TRAIN[k] - 1000 :])
        subj = root / name
        for d in (
            "roi_masks",
            "training_split/training_images",
            "training_split/training_fmri",
            "test_split/test_images",
        ):
            (subj / d).mkdir(parents=True, exist_ok=True)
        np.save(subj / "roi_masks" / "mapping_streams.npy", {0: "Unknown", 1: "early"})
        for hemi, n in VERTS.items():
            mask = np.zeros(n_fs, np.int32)
            mask[:n] = 1
            drop = MISSING.get(k, {}).get(hemi, 0)
            if drop:
                mask[rng.choice(n, drop, replace=False)] = 0
            np.save(subj / "roi_masks" / f"{hemi}.all-vertices_fsaverage_space.npy", mask)
            keep = np.flatnonzero(mask[:n])
            labels = (keep < n // 3).astype(np.int32)
            np.save(subj / "roi_masks" / f"{hemi}.streams_challenge_space.npy", labels)
            fs = np.zeros(n_fs, np.int32)
            fs[keep] = labels
            np.save(subj / "roi_masks" / f"{hemi}.streams_fsaverage_space.npy", fs)
            out = np.lib.format.open_memmap(
                subj / "training_split" / "training_fmri" / f"{hemi}_training_fmri.npy",
                mode="w+",
                dtype=np.float32,
                shape=(len(train_ids), keep.size),
            )
            for s in range(0, len(train_ids), 1024):
                ids = train_ids[s : s + 1024]
                block = latents[ids] @ basis[hemi][:, keep]
                out[s : s + len(ids)] = block + rng.normal(size=block.shape).astype(np.float32)
            out.flush()
            del out
        for split, ids in (("train", train_ids), ("test", test_ids)):
            folder = subj / (
                "training_split/training_images" if split == "train" else "test_split/test_images"
            )
            for i, nsd in enumerate(ids.tolist()):
                src = img_dir / f"{nsd:05d}.png"
                if nsd not in written:
                    pixels = rng.integers(0, 255, (image_size, image_size, 3), dtype=np.uint8)
                    Image.fromarray(pixels).save(src, compress_level=1)
                    written.add(nsd)
                dst = folder / f"{split}-{i + 1:04d}_nsd-{nsd:05d}.png"
                if not dst.exists():
                    os.link(src, dst)
        print(f"  wrote {name}", flush=True)
    (root / "done").touch()


def run_step(label: str, code: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code])
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"step {label} failed with status {status}")
    return usage.ru_maxrss / 2**20, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument(
        "--train-subjects",
        type=int,
        default=2,
        help="subjects in the one-epoch head training (subset)",
    )
    args = parser.parse_args()
    work = args.workdir.absolute()
    data, store, run = work / "data", work / "store", work / "run"
    print("writing the full-shape dataset (skipped if present)", flush=True)
    write_dataset(data, args.subjects, args.image_size)
    steps = {
        "prepare": (
            f"from brainencoder.data.prepare import PrepareOptions, prepare_store; "
            f"prepare_store({str(data)!r}, {str(store)!r}, PrepareOptions(image_size=64), "
            f"progress=False)"
        ),
        "group PCA (2048 components)": (
            f"from brainencoder.data.store import Store; from brainencoder.models.pca import "
            f"fit_group_pca; fit_group_pca(Store({str(store)!r}), 2048, n_iter=2)"
            f".save({str(work / 'pca.safetensors')!r})"
        ),
        "1 epoch head training (cached features)": (
            f"from brainencoder.training.config import load_config; "
            f"from brainencoder.training.loop import train; "
            f"train(load_config(None, ['encoder=tiny', 'model.img_size=64', "
            f"'model.latent_dim=2048', 'model.hidden_dim=1024', 'cache_features=true', "
            f"'epochs=1', 'batch_size=256', 'train_fraction=0.25', "
            f"'pca_file={work / 'pca.safetensors'}', 'log_every=50']), {str(store)!r}, "
            f"{str(run)!r}, "
            f"overwrite=True, progress=False)"
        ),
        "evaluate (testval, all subjects)": (
            "from brainencoder.evaluation.evaluate import evaluate_run; "
            f"evaluate_run({str(run)!r}, 'testval')"
        ),
        "submit (all subjects)": (
            f"from brainencoder.cli.main import main; main(['submit', {str(run)!r}, '--data', "
            f"{str(data)!r}, '--out', {str(work / 'submission.zip')!r}])"
        ),
    }
    results = []
    for label, code in steps.items():
        print(f"running: {label}", flush=True)
        results.append((label, *run_step(label, code)))
    print("\nstep                                         peak RSS (GiB)   wall (s)")
    for label, gib, secs in results:
        print(f"{label:<44} {gib:14.2f} {secs:10.0f}")


if __name__ == "__main__":
    main()
