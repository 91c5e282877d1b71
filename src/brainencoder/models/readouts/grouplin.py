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

from dataclasses import dataclass

import torch
from torch import nn

from .base import register_readout
from .group_options import PCAReadout, PCAReadoutOptions
from .subject_layers import apply_per_subject

__all__ = ["GroupLinOptions", "GroupLinReadout"]


@dataclass
class GroupLinOptions(PCAReadoutOptions):
    """Options of ``grouplin`` (defaults: the original entry's)."""


@register_readout("grouplin", GroupLinOptions)
class GroupLinReadout(PCAReadout):
    """The original GroupLin readout (see the module docstring).

    Parameters
    ----------
    feature_shapes, n_vertices, options
        See :class:`~brainencoder.models.readouts.base.Readout`.
    pca : GroupPCA, optional
        Fitted group PCA for the frozen embedding.
    """

    dropout_on = "input"
    projection_init = "uniform"
    mean_scale = 2  # the original embeds the shared and the subject latent and sums

    def make_shared(self) -> nn.Module:
        return nn.Linear(self.options.hidden_dim, self.options.latent_dim, bias=False)

    def make_subject_module(self) -> nn.Module:
        return nn.Linear(self.options.hidden_dim, self.options.latent_dim, bias=True)

    def latent(self, hidden: torch.Tensor, subject: torch.Tensor) -> torch.Tensor:
        return self.shared(hidden) + apply_per_subject(hidden, subject, self.subject_modules())
