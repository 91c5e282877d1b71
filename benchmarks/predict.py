"""``predict`` from image files vs the bare trunk forward on the same images.

Usage: python benchmarks/predict.py [--images 384] [--batch-size 64] [--workers N_CPUS]

Writes ``--images`` PNGs of 425 x 425 px (the challenge's size) to a
temporary folder, then for the tiny encoder (random ResNet-18, 112 px) and a
random ``test_vit`` (160 px), both trained-store size 256 px as the demo's,
measures in one run, images per second:

* trunk: the trunk's forward alone on already decoded, resized float batches;
* model: ``Encoder.predict`` on already decoded uint8 arrays (resize, trunk,
  readout);
* predict, serial: ``predict_images`` from the files, decoding in the main
  thread (``workers=0``, what the first release did);
* predict: ``predict_images`` with every image of the next batches decoded in
  its own thread task (``--workers`` threads, default one per CPU);
* predict from an array: the same pixels as one uint8 ``.npy`` (as NSD's
  HDF5 stimuli), read and resized in the same threads: no PNG decoding.

Goal: predict >= 80% of the trunk rate.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from brainencoder.core.space import GroupSpace
from brainencoder.data.images import load_image
from brainencoder.data.sources import ImageArray
from brainencoder.inference.images import list_images, predict_images
from brainencoder.models.encoder import create_encoder
from brainencoder.util.prefetch import available_cpus


def _space() -> GroupSpace:
    mask = np.zeros(10242, dtype=np.int64)
    mask[:1000] = 1
    return GroupSpace.from_masks({"subj01": {"lh": mask, "rh": mask}})


def _rate(fn, n_images: int, repeats: int = 2) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n_images / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=available_cpus())
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i in range(args.images):  # smooth random images compress like photos, not noise
            small = rng.integers(0, 256, (27, 27, 3), dtype=np.uint8)
            Image.fromarray(small).resize((425, 425), Image.BICUBIC).save(folder / f"{i:05d}.png")
        paths = list_images(folder)
        np.save(folder / "images.npy", np.stack([load_image(p) for p in paths]))
        space = _space()
        encoders = {
            "tiny": create_encoder("tiny", space),
            "test_vit": create_encoder(
                "tiny", space, trunk="test_vit", layers=[0, 1, 2], img_size=160
            ),
        }
        print(
            f"{args.images} PNGs of 425 px, batch {args.batch_size}, torch threads "
            f"{torch.get_num_threads()}, decode workers {args.workers}; images per second"
        )
        print(
            "| trunk | trunk alone | model on decoded arrays | predict, serial decode | "
            "predict, decoding in threads | predict from an array | predict / trunk, files | "
            "from an array / trunk |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, model in encoders.items():
            with ImageArray(folder / "images.npy") as array:
                rates = measure(model, paths, array, args.batch_size, args.workers)
            print(
                f"| {name} ({model.input_size} px) | {rates['trunk']:.0f} | {rates['model']:.0f} "
                f"| {rates['serial']:.0f} | {rates['prefetched']:.0f} | {rates['array']:.0f} | "
                f"{rates['prefetched'] / rates['trunk']:.2f} | "
                f"{rates['array'] / rates['trunk']:.2f} |",
                flush=True,
            )


def measure(
    model, paths: list[Path], array: ImageArray, batch_size: int, workers: int
) -> dict[str, float]:
    """Images per second: the trunk alone, the model on arrays, predict from files and array."""
    model.eval()
    model.store_image_size = 256
    decoded = np.stack([load_image(p, 256) for p in paths])
    batches = [
        model.prepare_images(decoded[s : s + batch_size]) for s in range(0, len(paths), batch_size)
    ]

    def trunk() -> None:
        with torch.no_grad():
            for x in batches:
                model.forward_features(x)

    n = len(paths)
    return {
        "trunk": _rate(trunk, n),
        "model": _rate(lambda: model.predict(decoded, "subj01", batch_size), n),
        "serial": _rate(lambda: predict_images(model, paths, "subj01", batch_size, False, 0), n),
        "prefetched": _rate(
            lambda: predict_images(model, paths, "subj01", batch_size, False, workers), n
        ),
        "array": _rate(
            lambda: predict_images(model, array, "subj01", batch_size, False, workers), n
        ),
    }


if __name__ == "__main__":
    main()
