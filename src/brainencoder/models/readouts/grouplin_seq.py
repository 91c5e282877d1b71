"""``grouplin_seq``: brainencoder's first GroupLin variant (sequential maps).

Per trunk layer: factorized projection (spatial weights start at average
pooling), BatchNorm, then dropout on the projection's output; the layers are
averaged into ``h``; then, in sequence, a shared ``Linear(K -> L)`` and the
subject's ``Linear(L -> L)``, and the frozen group-PCA embedding whose rows
are scaled by each component's standard deviation::

    y = E(subject(shared(h)))

The shared layer starts at zero and every subject map at the identity, so the
readout starts exactly at the training mean and subjects diverge only as the
data ask. Compared with ``grouplin`` it has an L x L map per subject instead
of K x L (more parameters when L > K) and converges in fewer epochs on small
data; see the accuracy table of docs/performance.md for when each is the better choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from .base import register_readout
from .group_options import PCAReadout, PCAReadoutOptions
from .subject_layers import apply_per_subject

__all__ = ["GroupLinSeqOptions", "GroupLinSeqReadout"]


@dataclass
class GroupLinSeqOptions(PCAReadoutOptions):
    """Options of ``grouplin_seq``."""

    embedding_scale: Literal["none", "std"] = "std"


@register_readout("grouplin_seq", GroupLinSeqOptions)
class GroupLinSeqReadout(PCAReadout):
    """Shared then per-subject latent maps (see the module docstring)."""

    dropout_on = "output"
    projection_init = "average"

    def make_shared(self) -> nn.Module:
        shared = nn.Linear(self.options.hidden_dim, self.options.latent_dim)
        nn.init.zeros_(shared.weight)
        nn.init.zeros_(shared.bias)
        return shared

    def make_subject_module(self) -> nn.Module:
        latent = self.options.latent_dim
        module = nn.Linear(latent, latent)
        with torch.no_grad():
            module.weight.copy_(torch.eye(latent))
            module.bias.zero_()
        return module

    def latent(self, hidden: torch.Tensor, subject: torch.Tensor) -> torch.Tensor:
        return apply_per_subject(self.shared(hidden), subject, self.subject_modules())
