"""Prepare throughput next to a plain decode+resize loop on all cores, same PNGs.

Usage: python benchmarks/prepare.py [--subjects 2] [--n-train 600] [--size 256]

Prints images/s (best of two alternating rounds) of ``prepare_store`` (decode,
resize, write into the image file, markers, fMRI copy, manifest) and of a bare
``ProcessPoolExecutor.map`` over the same files that only decodes and resizes;
the goal is a ratio >= 0.8.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from brainencoder.data.images import load_image
from brainencoder.data.layout import read_layout
from brainencoder.data.prepare import PrepareOptions, prepare_store
from brainencoder.data.synthetic import SyntheticConfig, make_synthetic


def _raw(path_size: tuple[str, int]) -> int:
    return int(load_image(path_size[0], path_size[1])[0, 0, 0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=2)
    parser.add_argument("--n-train", type=int, default=600)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = make_synthetic(
            Path(tmp) / "data",
            SyntheticConfig(
                n_subjects=args.subjects,
                n_train=args.n_train,
                n_test=50,
                n_vertices=500,
                shared_fraction=0.0,
            ),
        )
        layout = read_layout(root)
        paths = sorted(
            {str(p) for s in layout.subjects.values() for p in [*s.train_images, *s.test_images]}
        )
        n = len(paths)
        raw_times, prep_times = [], []
        for round_ in range(2):  # alternate, keep the best of each
            t0 = time.perf_counter()
            with ProcessPoolExecutor(os.cpu_count()) as pool:
                list(pool.map(_raw, [(p, args.size) for p in paths], chunksize=64))
            raw_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            prepare_store(
                root,
                Path(tmp) / f"store{round_}",
                PrepareOptions(image_size=args.size),
                progress=False,
            )
            prep_times.append(time.perf_counter() - t0)
        raw, prep = n / min(raw_times), n / min(prep_times)
    print(f"{n} PNGs 425x425 -> {args.size}x{args.size}, {os.cpu_count()} cores")
    print(f"raw decode+resize loop : {raw:8.1f} images/s")
    print(f"brainencoder prepare   : {prep:8.1f} images/s")
    print(f"ratio prepare / raw    : {prep / raw:8.2f}")


if __name__ == "__main__":
    main()
