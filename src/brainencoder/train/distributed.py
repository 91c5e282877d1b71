"""Process-group set-up for torchrun, and a BatchNorm synchronized on any backend."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistInfo", "SyncedBatchNorm1d", "barrier", "init_distributed", "sync_batchnorms"]


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


class SyncedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose batch statistics are all-reduced across processes.

    Unlike :class:`torch.nn.SyncBatchNorm` (CUDA only), it works with gloo on
    CPU as well; gradients flow through the all-reduce.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (
            self.training
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size() > 1
        ):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        k = x.shape[1]
        xf = x.float()
        stats = torch.cat([xf.sum(0), (xf * xf).sum(0), xf.new_tensor([x.shape[0]])])
        stats = all_reduce(stats)
        n = stats[-1]
        mean = stats[:k] / n
        var = (stats[k : 2 * k] / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - m).add_(m * mean)
                self.running_var.mul_(1 - m).add_(m * var * n / (n - 1).clamp_min(1))
                self.num_batches_tracked.add_(1)
        out = (xf - mean) / torch.sqrt(var + self.eps)
        if self.affine:
            out = out * self.weight + self.bias
        return out.to(x.dtype)


def sync_batchnorms(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d in ``module`` by :class:`SyncedBatchNorm1d` (in place)."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm1d:
            synced = SyncedBatchNorm1d(
                child.num_features,
                child.eps,
                child.momentum,
                child.affine,
                child.track_running_stats,
            )
            synced.load_state_dict(child.state_dict())
            synced.to(next(child.buffers()).device)
            setattr(module, name, synced)
        else:
            sync_batchnorms(child)
    return module
