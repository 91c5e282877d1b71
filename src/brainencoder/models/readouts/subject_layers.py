"""Per-subject readout pieces: route samples to their subject's module; subject gain and offset."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from torch import nn

__all__ = ["SubjectAffine", "affine_per_subject", "apply_per_subject"]


def apply_per_subject(
    x: torch.Tensor,
    subject: torch.Tensor,
    modules: Sequence[Callable[[torch.Tensor], torch.Tensor]],
) -> torch.Tensor:
    """Run each sample through the module of its subject.

    Parameters
    ----------
    x : Tensor of shape (B, ...)
    subject : LongTensor of shape (B,)
        Index into ``modules``.
    modules : sequence of callables
        One per subject; each maps (n, ...) to (n, D).

    Returns
    -------
    Tensor of shape (B, D)
        Only the subjects present in the batch are computed (one GEMM each).
    """
    out: torch.Tensor | None = None
    for index in torch.unique(subject).tolist():
        rows = (subject == index).nonzero().squeeze(1)
        y = modules[index](x.index_select(0, rows))
        if out is None:
            out = y.new_zeros((x.shape[0], *y.shape[1:]))
        out = out.index_copy(0, rows, y)
    if out is None:
        raise ValueError("empty batch")
    return out


class SubjectAffine(nn.Module):
    """One subject's per-vertex gain (starts at 1) and offset (starts at 0).

    Parameters
    ----------
    n_vertices : int
    """

    vertex_axes: ClassVar[dict[str, int]] = {"gain": 0, "offset": 0}

    def __init__(self, n_vertices: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(n_vertices))
        self.offset = nn.Parameter(torch.zeros(n_vertices))

    def no_weight_decay(self) -> set[str]:
        """A gain decayed towards 0 would silence the subject: neither is decayed."""
        return {"gain", "offset"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, n_vertices) -> (n, n_vertices)."""
        return x * self.gain + self.offset


def affine_per_subject(
    x: torch.Tensor, subject: torch.Tensor, modules: Sequence[SubjectAffine]
) -> torch.Tensor:
    """Each sample's subject gain and offset, in one gather: (B, V) -> (B, V)."""
    gain = torch.stack([m.gain for m in modules]).to(x.dtype)
    offset = torch.stack([m.offset for m in modules]).to(x.dtype)
    return x * gain[subject] + offset[subject]
