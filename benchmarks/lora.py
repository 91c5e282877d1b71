"""Phase 2 by unfreezing vs by LoRA: trainable parameters and step memory.

Usage: python benchmarks/lora.py [--batch-size 64] [--skip-eva02]

* The reference eva02 config (eva02_base_patch14_224, blocks 0-10 kept, random
  init: counts do not depend on the weights): trainable trunk parameters of the
  original's phase 2 (every parameter but cls_token, pos_embed, patch_embed,
  norms and MLPs, i.e. the attention blocks) vs LoRA rank 4 on the attention's
  q/k/v (and on q/k/v + proj).
* Measured on this CPU, one training step of the tiny encoder (random ResNet-18,
  112 px) and of a random ``test_vit`` at batch 64: bytes kept for backward
  (every tensor autograd saves, counted by a saved-tensors hook), parameter
  gradients and AdamW state (2 x trainable), and the step time; frozen trunk vs
  unfrozen vs LoRA.
"""

from __future__ import annotations

import argparse
import time

import torch

from brainencoder.core.space import GroupSpace
from brainencoder.models.encoder import create_encoder
from brainencoder.models.lora import LoRAConfig, apply_lora
from brainencoder.models.trunk import apply_freeze

PHASE2_FREEZE = ["cls_token", "pos_embed", "patch_embed*", "blocks*norm*", "blocks*mlp*"]


def _space(n_vertices: int = 2000) -> GroupSpace:
    mask = torch.zeros(10242, dtype=torch.int64)
    mask[:n_vertices] = 1
    masks = {f"subj0{i}": {"lh": mask.numpy(), "rh": mask.numpy()} for i in (1, 2)}
    return GroupSpace.from_masks(masks)


def _trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def eva02_counts() -> None:
    space = _space()
    enc = create_encoder("eva02_base", space, pretrained=False, readout={"latent_dim": 16})
    trunk = enc.trunk.model
    total = sum(p.numel() for p in trunk.parameters())
    for p in trunk.parameters():
        p.requires_grad_(True)
    apply_freeze(trunk, PHASE2_FREEZE)
    unfrozen = _trainable(trunk)
    print(f"eva02 base (blocks 0-10): trunk {total / 1e6:.2f} M parameters")
    print(f"  phase 2, attention unfrozen: {unfrozen / 1e6:.2f} M trainable")
    qkv = ["*attn.q_proj", "*attn.k_proj", "*attn.v_proj"]  # eva02's attention
    for targets in (qkv, [*qkv, "*attn.proj"]):
        enc = create_encoder("eva02_base", space, pretrained=False, readout={"latent_dim": 16})
        for p in enc.trunk.parameters():
            p.requires_grad_(False)
        wrapped = apply_lora(enc.trunk.model, LoRAConfig(rank=4, targets=targets))
        kinds = ", ".join(sorted({w.split(".")[-1] for w in wrapped}))
        print(
            f"  LoRA rank 4 on {len(wrapped)} layers ({kinds}): "
            f"{_trainable(enc.trunk) / 1e6:.3f} M trainable "
            f"({_trainable(enc.trunk) / unfrozen:.2%} of unfreezing)"
        )


def step_memory(encoder, images, subject) -> tuple[int, float]:
    """Bytes autograd saves for backward in one forward, and the step's seconds."""
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    params = [p for p in encoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = encoder(images, subject).square().mean()
    loss.backward()
    opt.step()
    return saved, time.perf_counter() - start


def measured(name: str, make, lora_targets: list[str], unfreeze: list[str], batch: int) -> None:
    print(f"{name}, one training step at batch {batch} (this CPU):")
    images = torch.rand(batch, 3, make().input_size, make().input_size)
    subject = torch.randint(0, 2, (batch,))
    for mode in ("frozen trunk", "unfrozen", "LoRA rank 4"):
        torch.manual_seed(0)
        enc = make().train()
        enc.set_trunk_mode(mode == "unfrozen")
        if mode == "unfrozen":
            for p in enc.trunk.parameters():
                p.requires_grad_(False)
            apply_freeze(enc.trunk.model, unfreeze, requires_grad=True)
        if mode.startswith("LoRA"):
            apply_lora(enc.trunk.model, LoRAConfig(rank=4, targets=lora_targets))
        trunk = _trainable(enc.trunk)
        step_memory(enc, images, subject)  # warm-up
        saved, seconds = step_memory(enc, images, subject)
        state = 3 * 4 * _trainable(enc)  # grads + two AdamW moments, float32
        print(
            f"  {mode:<13} trunk trainable {trunk / 1e6:6.3f} M  saved for backward "
            f"{saved / 2**20:7.1f} MiB  grads + AdamW state {state / 2**20:6.1f} MiB  "
            f"step {seconds:.2f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--skip-eva02", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if not args.skip_eva02:
        eva02_counts()
    space = _space()
    measured(
        "tiny (ResNet-18, 112 px, layer3 unfrozen vs LoRA on layer3)",
        lambda: create_encoder("tiny", space),
        ["layer3.*.conv*", "layer3.0.downsample.0"],
        ["layer3*"],
        args.batch_size,
    )
    measured(
        "test_vit (random, 160 px, attention unfrozen vs LoRA on qkv)",
        lambda: create_encoder(
            "tiny", space, trunk="test_vit", layers=[0, 1, 2], img_size=160, prefix_tokens=False
        ),
        LoRAConfig().targets,
        ["blocks*attn*"],
        args.batch_size,
    )


if __name__ == "__main__":
    main()
