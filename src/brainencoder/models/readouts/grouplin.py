"""``grouplin``: the CMI-DAIR GroupLin readout of Algonauts 2023, exactly.

Per trunk layer: dropout on the layer's feature map (all tokens, the class
token included when the trunk returns it), a factorized projection without
bias, BatchNorm. The layers' outputs ``h`` (B, K) are averaged. A shared
``Linear(K -> L, no bias)`` and the sample's subject ``Linear(K -> L, bias)``
act in parallel on ``h``; each goes through the frozen group-PCA embedding
``E`` (L -> n_vertices, bias = PCA mean ``m``) and the two are summed::

    y = E(shared(h)) + E(subject(h)) = (shared(h) + subject(h)) @ C + 2 m

so the PCA mean is added twice, as in the original
(``algonauts23/models/group_linear.py`` of childmindresearch/algonauts23).
Initialisation follows the original too: every weight like ``nn.Linear``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._options import PCAReadoutOptions
from .base import Readout, register_readout
from .layers import LayerProjection, apply_per_subject, average_projections, pca_embedding

__all__ = ["GroupLinOptions", "GroupLinReadout"]


@dataclass
class GroupLinOptions(PCAReadoutOptions):
    """Options of ``grouplin`` (defaults: the original entry's)."""


@register_readout("grouplin", GroupLinOptions)
class GroupLinReadout(Readout):
    """The original GroupLin readout (see the module docstring).

    Parameters
    ----------
    feature_shapes, subjects, n_vertices, options
        See :class:`~brainencoder.models.readouts.base.Readout`.
    pca : GroupPCA, optional
        Fitted group PCA for the frozen embedding.
    """

    uses_pca = True

    def __init__(
        self,
        feature_shapes: Sequence[Sequence[int]],
        subjects: Sequence[str],
        n_vertices: int,
        options: GroupLinOptions,
        pca: Any | None = None,
    ) -> None:
        super().__init__(feature_shapes, subjects, n_vertices, options)
        o = options
        self.projections = nn.ModuleList(
            LayerProjection(s, o.hidden_dim, o.dropout, o.norm, "input", "uniform")
            for s in self.feature_shapes
        )
        self.embedding = pca_embedding(o.latent_dim, n_vertices, pca, o.embedding_scale)
        o.latent_dim = self.embedding.latent_dim
        self.shared = nn.Linear(o.hidden_dim, o.latent_dim, bias=False)
        self._add_initial_subjects()

    def make_subject_module(self) -> nn.Module:
        return nn.Linear(self.options.hidden_dim, self.options.latent_dim, bias=True)

    def initialize(self, mean_response: torch.Tensor) -> None:
        """Set the embedding's bias (the PCA mean) to ``mean_response``."""
        with torch.no_grad():
            self.embedding.mean.copy_(mean_response)

    def forward(self, features: Sequence[torch.Tensor], subject: torch.Tensor) -> torch.Tensor:
        h = average_projections(self.projections, features)
        z = self.shared(h) + apply_per_subject(h, subject, self.subject_modules())
        return self.embedding(z) + self.embedding.mean.to(z.dtype)
