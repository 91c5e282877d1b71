"""``point`` as it was when the recipes issue was filed, for side-by-side timing.

Registers the readout ``point_as_filed``: the same parameters, options and
function as ``point``, computed the way ``point`` computed them then: each
layer read by its own matrix product and the parts summed, dropout on the
(B, D, V) reads, and the per-vertex weights applied with ``einsum`` (whose
batched form loops over the vertices on CPU). Gaussian sampling only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from brainencoder.models.readouts.base import register_readout
from brainencoder.models.readouts.point import PointOptions, PointReadout
from brainencoder.models.readouts.subject_layers import affine_per_subject

__all__ = ["PointAsFiled"]


@register_readout("point_as_filed", PointOptions)
class PointAsFiled(PointReadout):
    """``point`` with its earlier forward pass (see the module docstring)."""

    def forward(self, features: Sequence[torch.Tensor], subject: torch.Tensor) -> torch.Tensor:
        self.check_features(features)
        select = self.layer_weights()
        mixed = None
        for layer, (x, reduce) in enumerate(zip(features, self.reduce)):
            fmap = reduce(x)
            grid = self.options.max_grid
            if grid and max(fmap.shape[-2:]) > grid:
                fmap = F.avg_pool2d(fmap, -(-max(fmap.shape[-2:]) // grid), ceil_mode=True)
            part = self.sample(fmap, layer, select[:, layer].to(x.dtype))
            mixed = part if mixed is None else mixed + part
        mixed = self.dropout(mixed)  # (B, D, V)
        out = torch.einsum("bdv,vd->bv", mixed, self.weight.to(mixed.dtype)) + self.bias
        return affine_per_subject(out, subject, self.subject_modules())
