"""Parameter counts and forward-pass peak memory of the reference configuration.

Usage: python benchmarks/reference_model.py

Builds ``eva02_base`` (eva02_base_patch14_224, blocks 0,2,...,10, hidden 1024,
latent 2048) with random weights for 8 subjects and 39,548 group vertices, and
runs a forward pass of 2 images on the CPU.
"""

from __future__ import annotations

import resource
import time

import numpy as np
import torch

from brainencoder.core.space import GroupSpace
from brainencoder.models.encoder import create_encoder


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    masks = {}
    for k in range(8):
        masks[f"subj{k + 1:02d}"] = {}
        for hemi, n in (("lh", 19004), ("rh", 20544)):
            m = np.zeros(163842, bool)
            m[:n] = True
            masks[f"subj{k + 1:02d}"][hemi] = m
    space = GroupSpace.from_masks(masks)
    for name in ("grouplin_seq",):  # the other readout's parameter count, side by side
        other = create_encoder(
            "eva02_base", space, pretrained=False, readout={"name": name, "latent_dim": 2048}
        )
        n = sum(p.numel() for p in other.readout.parameters() if p.requires_grad)
        print(f"readout {name:<12} trainable parameters            : {n / 1e6:8.2f} M")
        del other
    before = _rss_mib()
    model = create_encoder("eva02_base", space, pretrained=False).eval()
    built = _rss_mib()
    trunk = sum(p.numel() for p in model.trunk.parameters())
    head = sum(p.numel() for p in model.readout.parameters() if p.requires_grad)
    pca = sum(b.numel() for b in model.readout.embedding.buffers())
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 224, 224), torch.tensor([0, 7]))
    seconds = time.perf_counter() - t0
    print(f"group space: {space.n_vertices} vertices, 8 subjects; output {tuple(out.shape)}")
    print(f"trunk parameters (eva02 base, pruned after block 10): {trunk / 1e6:8.2f} M")
    print(f"readout grouplin trainable parameters             : {head / 1e6:8.2f} M")
    print(f"frozen group-PCA embedding (components + mean)    : {pca / 1e6:8.2f} M")
    print(
        f"peak RSS: {before:.0f} MiB before, {built:.0f} MiB built, "
        f"{_rss_mib():.0f} MiB after the forward pass of 2 images ({seconds:.2f} s)"
    )


if __name__ == "__main__":
    main()
