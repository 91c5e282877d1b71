"""One optimizer step, and the optimizer and schedule it uses.

:class:`TrainStep` holds everything a step needs (model, data, cache, loss,
optimizer, precision, process group). :meth:`TrainStep.prepare` reads and
augments this rank's share of a global batch (CPU work that the loop runs ahead
in threads when ``num_workers`` > 0); :meth:`TrainStep.run` runs the forward and
backward passes of every micro-batch, then the optimizer. Calling the object
does both. ``benchmarks/train.py`` times this same object.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.loader import StoreBatches
from ..data.transforms import random_resized_crop
from ..inference.cache import FeatureCache
from ..models.encoder import Encoder
from ..models.readouts import Readout
from ..models.readouts.smoothness import smoothness_penalty
from ..util.errors import ConfigError
from .config import TrainConfig
from .distributed import DistInfo
from .losses import Loss
from .smoothing import smoothness_at

__all__ = [
    "Batch",
    "MicroBatch",
    "NonFiniteLossError",
    "TrainStep",
    "amp_settings",
    "lr_at",
    "make_optimizer",
]


class NonFiniteLossError(ConfigError):
    """The training loss became NaN or inf."""


def lr_at(
    step: int, total_steps: int, base_lr: float, warmup_frac: float, min_lr_frac: float
) -> float:
    """Learning rate at optimizer step ``step`` (0-based): linear warmup, cosine to a floor."""
    warmup = round(warmup_frac * total_steps)
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    floor = min_lr_frac * base_lr
    return floor + (base_lr - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def amp_settings(config: TrainConfig, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, whether a gradient scaler is needed)."""
    mode = config.amp
    if mode == "auto":
        if device.type != "cuda":
            return None, False
        mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if mode == "none":
        return None, False
    if mode == "fp16" and device.type != "cuda":
        raise ConfigError("amp 'fp16' needs a CUDA device; use 'bf16' or 'none' on CPU")
    return (torch.bfloat16, False) if mode == "bf16" else (torch.float16, True)


def no_decay_names(module: nn.Module) -> set[str]:
    """Parameters exempt from weight decay by their modules' ``no_weight_decay()``.

    timm's convention: a module lists names relative to itself (positions,
    embeddings, LoRA factors...); the returned names are relative to ``module``.
    Every readout declares the hook (:meth:`Readout.no_weight_decay`); other
    modules may (timm's models, LoRA layers, a readout's subject modules).
    """
    names = set()
    for prefix, sub in module.named_modules():
        if isinstance(sub, Readout):
            own = sub.no_weight_decay()
        else:
            hook = getattr(sub, "no_weight_decay", None)  # timm's optional hook
            own = hook() if callable(hook) else set()
        names |= {f"{prefix}.{n}" if prefix else n for n in own}
    return names


def param_groups(module: nn.Module, weight_decay: float, decay_all: bool) -> list[dict[str, Any]]:
    """AdamW groups: decay on every parameter, or on matrices only (ndim >= 2).

    Parameters a module exempts (``no_weight_decay()``, see
    :func:`no_decay_names`) are never decayed.
    """
    exempt = no_decay_names(module)
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]

    def decays(name: str, p: nn.Parameter) -> bool:
        if name in exempt or any(name.startswith(f"{e}.") for e in exempt):
            return False
        return decay_all or p.ndim >= 2

    groups = [
        {"params": [p for n, p in named if decays(n, p)], "weight_decay": weight_decay},
        {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]] or groups[:1]


def make_optimizer(
    module: nn.Module, config: TrainConfig, device: torch.device
) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters of ``module`` as ``config`` says."""
    return torch.optim.AdamW(
        param_groups(module, config.weight_decay, config.decay_all_params),
        lr=config.lr,
        betas=(config.betas[0], config.betas[1]),
        fused=device.type == "cuda",
    )


@dataclass
class MicroBatch:
    """One micro-batch, read and augmented, on the CPU.

    Attributes
    ----------
    inputs : Tensor of shape (b, 3, S, S) or list of Tensor of shape (b, C, *positions)
        Cropped float images in [0, 1] (``S`` the model's input size), or the
        cached trunk features of one view per sample (one tensor per layer).
    subject : Tensor of int64, shape (b,)
        The model's subject index of each sample.
    target : Tensor of float32, shape (b, n_group)
        Group-space targets, zero where masked.
    mask : Tensor of bool, shape (b, n_group)
        True where the sample's subject has the vertex.
    """

    inputs: torch.Tensor | list[torch.Tensor]
    subject: torch.Tensor
    target: torch.Tensor
    mask: torch.Tensor


@dataclass
class Batch:
    """This rank's share of one global batch, ready for :meth:`TrainStep.run`.

    Attributes
    ----------
    epoch, step : int
        Where the batch belongs (for messages).
    size : int
        Samples of this rank.
    n_vertices : float
        Sum over this rank's samples of their subjects' vertex counts (the
        loss's normalizer before the sum over ranks).
    parts : list of MicroBatch
    """

    epoch: int
    step: int
    size: int
    n_vertices: float
    parts: list[MicroBatch]


@dataclass
class TrainStep:
    """One optimizer step over this rank's share of a global batch.

    :meth:`prepare` reads and augments a batch (CPU only, a pure function of
    its arguments and the seeds: safe to run ahead in worker threads);
    :meth:`run` does the forward and backward passes and the optimizer step;
    calling the object does both.

    Attributes
    ----------
    module : nn.Module
        What runs forward: the readout (from a feature cache) or the encoder,
        possibly wrapped in DistributedDataParallel.
    model : Encoder or Readout
        The unwrapped encoder (its input size for crops; its readout's
        regularizer), or a bare readout when training from features.
    batches : StoreBatches
    cache : FeatureCache or None
    loss : Loss
    optimizer : torch.optim.Optimizer
    scaler : torch.amp.GradScaler
    config : TrainConfig
    device : torch.device
    info : DistInfo
    amp_dtype : torch.dtype or None
    neighbours : LongTensor of shape (n_edges, 2) or None
        Group vertices joined on the surface, on the device, when
        ``config.smoothness`` smooths the readout's tuning over them.
    total_steps : int
        Optimizer steps of the whole run (the smoothness prior's ramp).
    """

    module: nn.Module
    model: Encoder | Readout
    batches: StoreBatches
    cache: FeatureCache | None
    loss: Loss
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    config: TrainConfig
    device: torch.device
    info: DistInfo
    amp_dtype: torch.dtype | None = None
    neighbours: torch.Tensor | None = None
    total_steps: int = 1

    def inputs(
        self, chunk: np.ndarray, epoch: int, step: int, part: int
    ) -> torch.Tensor | list[torch.Tensor]:
        """Cached features or augmented images of micro-batch ``chunk``, on the CPU.

        A pure function of (seed, epoch) for the cached views and of (seed,
        step, part, rank) for the crops. Returns (b, 3, S, S) images or one
        (b, C, *positions) tensor per cached layer.
        """
        cfg = self.config
        if self.cache is not None:
            views = np.random.default_rng([cfg.seed, epoch, 7]).integers(
                self.cache.n_views, size=len(self.batches.index)
            )[chunk]
            return self.cache.get(views, self.cache.lookup(self.batches.index.image[chunk]))
        seed = np.random.SeedSequence([cfg.seed, step, part, self.info.rank]).generate_state(1)
        gen = torch.Generator().manual_seed(int(seed[0]))
        return random_resized_crop(
            self.batches.images(chunk), self.model.input_size, tuple(cfg.crop_scale), gen
        )

    def prepare(self, positions: np.ndarray, epoch: int, step: int) -> Batch:
        """Read and augment the micro-batches of a step (no model, no global state).

        Parameters
        ----------
        positions : ndarray of int64, shape (b,)
            This rank's positions (into the batches' index) of the global batch.
        epoch, step : int
            For the seeds of views and crops.
        """
        cfg = self.config
        micro = max(1, cfg.batch_size // cfg.grad_accum // self.info.world_size)
        parts = []
        for i in range(0, len(positions), micro):
            chunk = positions[i : i + micro]
            target, mask = self.batches.targets(chunk)
            inputs = self.inputs(chunk, epoch, step, i // micro)
            parts.append(MicroBatch(inputs, self.batches.subjects(chunk), target, mask))
        n_vertices = float(self.batches.n_vertices[self.batches.index.subject[positions]].sum())
        return Batch(epoch, step, len(positions), n_vertices, parts)

    def __call__(self, positions: np.ndarray, epoch: int, step: int) -> float:
        """Prepare and run the step; returns the global batch's loss (see :meth:`run`)."""
        return self.run(self.prepare(positions, epoch, step))

    def penalty(self, step: int) -> torch.Tensor:
        """The readout's regularizer, plus the smoothness prior when ``neighbours`` is set."""
        readout = getattr(self.model, "readout", self.model)
        penalty = readout.regularizer()
        if self.neighbours is not None:
            weight = smoothness_at(step, self.total_steps, self.config.smoothness)
            penalty = penalty + weight * smoothness_penalty(readout, self.neighbours)
        return penalty

    def run(self, batch: Batch) -> float:
        """Forward, backward and optimizer step on a prepared batch; returns its global loss.

        Raises
        ------
        NonFiniteLossError
            When the loss is NaN or inf (nothing is updated).
        """
        cfg, info = self.config, self.info
        # normalize by the vertex count of the whole global batch, so that micro-batches and
        # DDP ranks (whose gradients DDP averages) add up to the global loss exactly
        count = torch.tensor(batch.n_vertices)
        if info.enabled:
            torch.distributed.all_reduce(count)
        denominator = count.item() / info.world_size
        total = 0.0
        n_parts = len(batch.parts)
        for i, part in enumerate(batch.parts):
            subject = part.subject.to(self.device)
            target, mask = part.target.to(self.device), part.mask.to(self.device)
            sync = i == n_parts - 1 or not info.enabled
            ctx = contextlib.nullcontext() if sync else self.module.no_sync()
            autocast = torch.autocast(
                self.device.type,
                dtype=self.amp_dtype or torch.float32,
                enabled=self.amp_dtype is not None,
            )
            with ctx, autocast:
                pred = self.module(self._on_device(part.inputs), subject)
                loss = self.loss(pred, target, mask, denominator, subject)
                penalty = self.penalty(batch.step)
                if penalty.requires_grad:  # once per step in total, on every rank alike
                    loss = loss + penalty / n_parts
            self.scaler.scale(loss).backward()
            total += float(loss.detach()) / info.world_size
        if info.enabled:  # the logged loss is the global batch's
            reduced = torch.tensor(total)
            torch.distributed.all_reduce(reduced)
            total = reduced.item()
        if not math.isfinite(total):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(
                f"the training loss became {total} at step {batch.step + 1} "
                f"(epoch {batch.epoch + 1}); nothing was saved from this step: lower lr, "
                "set grad_clip, or check the data"
            )
        if cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return total

    def _on_device(
        self, inputs: torch.Tensor | list[torch.Tensor]
    ) -> torch.Tensor | list[torch.Tensor]:
        if isinstance(inputs, torch.Tensor):
            return inputs.to(self.device, non_blocking=True)
        return [x.to(self.device, non_blocking=True) for x in inputs]
