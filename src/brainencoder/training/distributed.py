"""Process-group set-up for torchrun, and BatchNorm synchronized on any backend."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "DistInfo",
    "SyncedBatchNorm",
    "barrier",
    "init_distributed",
    "sync_batchnorms",
]


@dataclass
class DistInfo:
    """Rank layout of this process (a single process is rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun describes in the environment, if any.

    NCCL on CUDA, gloo on CPU; multi-node works through torchrun's rendezvous
    (``--nnodes``, ``--rdzv-endpoint``), which sets the same variables.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return info


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


class SyncedBatchNorm(_BatchNorm):
    """A BatchNorm (1d, 2d or 3d) whose batch statistics are all-reduced across processes.

    Unlike :class:`torch.nn.SyncBatchNorm` (CUDA and a few other accelerators
    only), it works with gloo on CPU as well; gradients flow through the
    all-reduce. Statistics are taken per channel (dimension 1) over every
    other dimension, as the BatchNorm it replaces does.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {x.dim()}-D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not (
            self.training
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size() > 1
        ):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        k = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = [1, k] + [1] * (x.dim() - 2)  # broadcast a (k,) vector over x
        xf = x.float()
        count = x.numel() // k
        stats = torch.cat([xf.sum(dims), (xf * xf).sum(dims), xf.new_tensor([count])])
        stats = all_reduce(stats)
        n = stats[-1]
        mean = stats[:k] / n
        var = (stats[k : 2 * k] / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum  # None: a cumulative average, as torch's BatchNorm
                if m is None:
                    m = 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(m * mean)
                self.running_var.mul_(1 - m).add_(m * var * n / (n - 1).clamp_min(1))
        out = (xf - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)


def sync_batchnorms(module: nn.Module, native: bool = False) -> nn.Module:
    """Synchronize the statistics of every BatchNorm in ``module`` across processes.

    Parameters
    ----------
    module : nn.Module
        Changed in place (its BatchNorm children are replaced); also returned.
    native : bool, default=False
        Use :class:`torch.nn.SyncBatchNorm` (CUDA and other accelerators with
        NCCL-like backends); otherwise :class:`SyncedBatchNorm`, which works on
        any backend, gloo on CPU included.

    Every :class:`~torch.nn.modules.batchnorm._BatchNorm` is converted
    (``BatchNorm1d`` of the PCA readouts, ``BatchNorm2d`` of ``point``, ...),
    with its parameters, running statistics and settings.
    """
    if native:
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, _BatchNorm) and not isinstance(
            child, (SyncedBatchNorm, nn.SyncBatchNorm)
        ):
            synced = SyncedBatchNorm(
                child.num_features,
                child.eps,
                child.momentum,
                child.affine,
                child.track_running_stats,
            )
            synced.load_state_dict(child.state_dict())
            synced.train(child.training)
            ref = next(iter(child.buffers()), None)
            if ref is not None:
                synced.to(ref.device)
            setattr(module, name, synced)
        else:
            sync_batchnorms(child)
    return module
