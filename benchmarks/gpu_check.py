"""GPU check of the reference configuration: throughput and memory of every training mode.

Usage:
    python benchmarks/gpu_check.py                 # on a CUDA machine: the full check
    python benchmarks/gpu_check.py --reduced       # anywhere (CPU): small shapes, a few steps

Full mode builds the reference encoder (eva02 base, blocks 0, 2, ..., 10, all
257 tokens, the ``grouplin`` readout; random weights, as weights cannot be
downloaded) for 8 subjects and the challenge's 39,548 group vertices, and
times ``--steps`` optimizer steps (after ``--warmup``) on synthetic batches of
``--batch-size`` for:

* phase 1 from images (frozen trunk, readout trained);
* phase 1 from a feature cache (float16 features copied to the GPU per batch);
* phase 2 (the trunk's attention unfrozen, the original's freeze list);
* phase 2 by LoRA (rank 4 on q/k/v), if available;

each under bf16 and fp16 autocast (fp16 with a gradient scaler), printing
samples per second and peak GPU memory. With several GPUs it also runs phase 1
from images under DDP on all of them and prints the scaling against one GPU.

Reduced mode uses a random ``test_vit`` trunk, 2 subjects, 600 vertices,
batch 8 and 3 steps on the CPU (bf16 only), so the script is tested.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from brainencoder.core.space import GroupSpace
from brainencoder.models.encoder import create_encoder
from brainencoder.models.lora import LoRAConfig, apply_lora
from brainencoder.models.trunk import apply_freeze
from brainencoder.training.step import param_groups

PHASE2_FREEZE = ["cls_token", "pos_embed", "patch_embed*", "blocks*norm*", "blocks*mlp*"]
LORA_TARGETS = ["*attn.q_proj", "*attn.k_proj", "*attn.v_proj", "*attn.qkv"]


@dataclass
class Setup:
    """What one check runs on."""

    device: torch.device
    n_subjects: int
    n_vertices: tuple[int, int]
    batch: int
    steps: int
    warmup: int
    amp: tuple[str, ...]
    reduced: bool


def group_space(n_subjects: int, n_vertices: tuple[int, int]) -> GroupSpace:
    """A group space of ``n_subjects`` subjects sharing every vertex."""
    masks = {}
    for s in range(n_subjects):
        masks[f"subj{s + 1:02d}"] = {
            h: np.r_[np.ones(n, np.int64), np.zeros(163842 - n, np.int64)]
            for h, n in zip(("lh", "rh"), n_vertices)
        }
    return GroupSpace.from_masks(masks)


def build(setup: Setup):
    space = group_space(setup.n_subjects, setup.n_vertices)
    if setup.reduced:
        readout = {"name": "grouplin", "hidden_dim": 32, "latent_dim": 16, "dropout": 0.9}
        return create_encoder(
            "eva02_base",
            space,
            trunk="test_vit",
            pretrained=False,
            layers=[0, 1],
            img_size=64,
            readout=readout,
        )
    return create_encoder("eva02_base", space, pretrained=False)


def configure(model, mode: str) -> None:
    """Set what trains: the readout only, the attention (phase 2), or LoRA factors."""
    model.set_trunk_mode(mode == "phase 2")
    if mode == "phase 2":
        apply_freeze(model.trunk.model, PHASE2_FREEZE)
    if mode == "phase 2 LoRA":
        targets = [
            t
            for t in LORA_TARGETS
            if any(n.endswith(t[1:]) for n, _ in model.trunk.model.named_modules())
        ]
        apply_lora(model.trunk.model, LoRAConfig(rank=4, targets=targets))


def time_mode(setup: Setup, mode: str, amp: str, ddp: bool = False) -> tuple[float, float]:
    """Samples per second and peak GPU memory (GiB; 0 on CPU) of ``mode`` under ``amp``.

    ``ddp``: wrap the model in DistributedDataParallel (a process group must exist).
    """
    torch.manual_seed(0)
    model = build(setup)
    configure(model, mode)
    model.to(setup.device).train()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    trained = model.readout if mode == "from cache" else model
    opt = torch.optim.AdamW(param_groups(trained, 0.05, False), lr=1e-5)
    scaler = torch.amp.GradScaler(setup.device.type, enabled=amp == "fp16")
    size = model.input_size
    b, dev = setup.batch, setup.device
    images = torch.rand(b, 3, size, size, device=dev)
    subject = torch.arange(b, device=dev) % setup.n_subjects
    target = torch.randn(b, model.space.n_vertices, device=dev)
    forward = model
    if ddp:
        forward = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index])
    cached = None
    if mode == "from cache":
        with torch.no_grad():
            feats = model.forward_features(images)
        cached = [f.to(torch.float16).cpu() for f in feats]
        if dev.type == "cuda":
            cached = [f.pin_memory() for f in cached]

    def step() -> None:
        with torch.autocast(dev.type, dtype=dtype):
            if cached is not None:
                feats = [f.to(dev, non_blocking=True).float() for f in cached]
                pred = model.readout(feats, subject)
            else:
                pred = forward(images, subject)
            loss = (pred.float() - target).square().mean()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    for _ in range(setup.warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(setup.steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else 0.0
    return setup.steps * b / seconds, peak


def _ddp_worker(rank: int, world: int, setup: Setup, out) -> None:
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29531")
    torch.distributed.init_process_group("nccl", rank=rank, world_size=world)
    torch.cuda.set_device(rank)
    local = Setup(**{**setup.__dict__, "device": torch.device("cuda", rank)})
    rate, _ = time_mode(local, "from images", "bf16", ddp=True)
    rates = [None] * world
    torch.distributed.all_gather_object(rates, rate)
    if rank == 0:
        out.put(sum(rates))
    torch.distributed.destroy_process_group()


def ddp_scaling(setup: Setup) -> None:
    """Phase 1 from images on every GPU (one process each) vs one GPU."""
    import torch.multiprocessing as mp

    world = torch.cuda.device_count()
    if world < 2:
        print("one GPU: no DDP comparison")
        return
    one, _ = time_mode(setup, "from images", "bf16")
    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_ddp_worker, args=(world, setup, queue), nprocs=world)
    total = queue.get()
    print(
        f"DDP phase 1 from images, bf16: 1 GPU {one:.0f} samples/s, {world} GPUs {total:.0f} "
        f"samples/s ({total / one / world:.0%} of linear scaling; batch {setup.batch} per GPU)"
    )


def run_check(setup: Setup) -> list[dict]:
    """Every mode under every AMP dtype; prints a table and returns its rows."""
    name = torch.cuda.get_device_name(setup.device) if setup.device.type == "cuda" else "CPU"
    print(
        f"{name}: {setup.n_subjects} subjects, {sum(setup.n_vertices)} vertices, batch "
        f"{setup.batch}, {setup.steps} timed steps after {setup.warmup}"
    )
    print("| mode | AMP | samples/s | peak GPU memory |")
    print("|---|---|---:|---:|")
    rows = []
    for mode in ("from images", "from cache", "phase 2", "phase 2 LoRA"):
        for amp in setup.amp:
            rate, peak = time_mode(setup, mode, amp)
            rows.append({"mode": mode, "amp": amp, "samples_per_s": rate, "peak_gib": peak})
            print(f"| {mode} | {amp} | {rate:.1f} | {peak:.2f} GiB |", flush=True)
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reduced", action="store_true", help="small shapes on the CPU")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args(argv)
    if args.reduced:
        setup = Setup(torch.device("cpu"), 2, (300, 300), 8, 3, 1, ("bf16",), True)
    else:
        if not torch.cuda.is_available():
            parser.error("no CUDA device; run with --reduced on a CPU")
        setup = Setup(
            torch.device("cuda"),
            8,
            (19004, 20544),
            args.batch_size,
            args.steps,
            args.warmup,
            ("bf16", "fp16"),
            False,
        )
    rows = run_check(setup)
    if not args.reduced:
        ddp_scaling(setup)
    return rows


if __name__ == "__main__":
    main()
