"""Head training-step throughput next to a plain dense matmul of the same FLOPs.

Usage: python benchmarks/head.py [--batch 64] [--repeats 3]

Reference shapes (shared/DESIGN.md section 3): 6 trunk layers of 768 channels x
257 tokens (eva02 base), hidden 1024, latent 2048, 8 subjects, 39,548 group vertices.
FLOPs of one step (forward + backward, trunk features given) are counted with
torch's FlopCounterMode; the matmul rate is measured on a square fp32 matmul
in the same run. Goal: the head reaches >= 50% of that rate.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from brainencoder.models.readouts import create_readout, list_readouts
from brainencoder.training.losses import masked_mse


def _best(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vertices", type=int, default=39548)
    parser.add_argument("--readout", default="grouplin", choices=list_readouts())
    args = parser.parse_args()
    torch.manual_seed(0)
    shapes = [(768, 257)] * 6  # eva02 base blocks: 768 channels x (1 class + 16 x 16) tokens
    n_subjects = 8
    subjects = [f"subj{k + 1:02d}" for k in range(n_subjects)]
    head = create_readout(
        args.readout, shapes, subjects, args.vertices, hidden_dim=1024, latent_dim=2048
    )
    opt = torch.optim.AdamW([p for p in head.parameters() if p.requires_grad], lr=1e-4)
    feats = [torch.randn(args.batch, *s) for s in shapes]
    subject = torch.randint(0, n_subjects, (args.batch,))
    target = torch.randn(args.batch, args.vertices)
    mask = torch.rand(args.batch, args.vertices) > 0.01

    def step() -> None:
        loss = masked_mse(head(feats, subject), target, mask)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    counter = FlopCounterMode(display=False)
    with counter:
        loss = masked_mse(head(feats, subject), target, mask)
        loss.backward()
    flops = counter.get_total_flops()
    opt.zero_grad(set_to_none=True)
    t_head = _best(step, args.repeats)

    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    t_mm = _best(lambda: a @ b, args.repeats + 2)
    rate = 2 * n**3 / t_mm
    n_params = sum(p.numel() for p in head.parameters() if p.requires_grad)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    print(f"readout {args.readout}: {n_params / 1e6:.1f} M trainable parameters")
    print(
        f"head step (fwd+bwd+AdamW): {t_head:.3f} s, {flops / 1e9:.1f} GFLOP "
        f"-> {flops / t_head / 1e9:.1f} GFLOP/s"
    )
    print(
        f"dense matmul {n}x{n}: {rate / 1e9:.1f} GFLOP/s; same FLOPs would take "
        f"{flops / rate:.3f} s"
    )
    print(f"head rate / matmul rate: {flops / t_head / rate:.2f}")


if __name__ == "__main__":
    main()
