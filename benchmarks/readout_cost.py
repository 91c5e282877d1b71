"""Parameters, FLOPs and activation memory of each readout at the challenge's shape.

Usage: python benchmarks/readout_cost.py [--batch 4] [--vertices 39548]

Builds every registered readout for the reference trunk's output (6 eva02-base
layers of 768 channels; 16 x 16 maps for ``point``, which needs spatial maps,
and 257 tokens for the others, as the original), 8 subjects and the group
space's 39,548 vertices, then runs one forward and backward at a small batch on
this CPU (float32) and reports: trainable parameters, forward GFLOPs per image
(torch's FlopCounterMode: matmuls and convolutions), and bytes autograd saves
for backward per image. The last column scales the saved bytes to batch 64 in
bf16 (x 64 / 2): the activation memory of one training step of the readout on
a GPU, on top of the trunk's.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from brainencoder.core.regions import RegionLabels
from brainencoder.models.readouts import ReadoutContext, create_readout, list_readouts

SUBJECTS = [f"subj0{i}" for i in range(1, 9)]


def measure(name: str, n_vertices: int, batch: int) -> tuple[int, float, float]:
    spatial = name == "point"
    shapes = [(768, 16, 16) if spatial else (768, 257)] * 6
    context = ReadoutContext()
    if name == "roi_query":  # 24 regions of the challenge's ROI groups + "other"
        labels = np.random.default_rng(0).integers(0, 25, n_vertices)
        context = ReadoutContext(regions=RegionLabels(labels, [f"roi{i}" for i in range(1, 25)]))
    options = {"latent_dim": 2048, "hidden_dim": 1024} if name.startswith("grouplin") else {}
    torch.manual_seed(0)
    readout = create_readout(name, shapes, SUBJECTS, n_vertices, context, **options).train()
    params = sum(p.numel() for p in readout.parameters() if p.requires_grad)
    feats = [torch.randn(batch, *s) for s in shapes]
    subject = torch.arange(batch) % len(SUBJECTS)
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    counter = FlopCounterMode(display=False)
    with counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = readout(feats, subject)
    forward_flops = counter.get_total_flops()
    out.square().mean().backward()
    return params, forward_flops / batch / 1e9, saved / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--vertices", type=int, default=39548)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(
        f"| readout | trainable parameters | forward GFLOPs / image | saved for backward / image "
        f"| batch 64, bf16 |  ({args.vertices} vertices, 8 subjects, 6 layers of 768 channels)"
    )
    print("|---|---:|---:|---:|---:|")
    for name in list_readouts():
        if name.startswith("test_"):
            continue
        params, gflops, saved = measure(name, args.vertices, args.batch)
        print(
            f"| {name} | {params / 1e6:.2f} M | {gflops:.2f} | {saved / 2**20:.1f} MiB "
            f"| {saved * 64 / 2 / 2**30:.2f} GiB |",
            flush=True,
        )


if __name__ == "__main__":
    main()
