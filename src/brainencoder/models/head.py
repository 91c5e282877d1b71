"""Multi-subject readout heads.

A readout maps the trunk's feature maps of a batch, and each sample's subject
index, to a prediction in the group surface space. The interface is
:class:`Readout`; :class:`GroupLinReadout` is the reference "GroupLin" head:

1. per trunk layer, a factorized projection (a learned spatial pooling per
   output channel times a channel projection), BatchNorm and dropout;
   outputs averaged over layers;
2. a shared ``Linear(hidden -> latent)``;
3. a per-subject ``Linear(latent -> latent)`` (:class:`GroupLinear`);
4. a frozen group-PCA embedding ``latent -> n_group_vertices``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["FactorizedProjection", "GroupLinReadout", "GroupLinear", "PCAEmbedding", "Readout"]


class FactorizedProjection(nn.Module):
    """Factorized spatial x channel readout of one feature map.

    ``out[b, k] = sum_{c, p} x[b, c, p] * spatial[k, p] * channel[k, c]``,
    followed by BatchNorm and dropout. Of the two contraction orders, the one
    whose intermediate is smaller is used (channels first when there are fewer
    positions than channels, e.g. ViT maps; positions first otherwise, e.g.
    early convnet maps); the (B, K, C, H*W) product is never formed.

    Parameters
    ----------
    in_channels : int
        C of the input map.
    n_positions : int
        H * W of the input map.
    hidden_dim : int
        K, the number of output channels.
    dropout : float, default=0.0
    """

    def __init__(
        self, in_channels: int, n_positions: int, hidden_dim: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.in_channels, self.n_positions = in_channels, n_positions
        self.spatial = nn.Parameter(torch.empty(hidden_dim, n_positions))
        self.channel = nn.Parameter(torch.empty(hidden_dim, in_channels))
        self.norm = nn.BatchNorm1d(hidden_dim)
        self.drop = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # spatial weights start near uniform average pooling; channels like nn.Linear
        with torch.no_grad():
            self.spatial.normal_(1.0, 0.1).div_(self.n_positions)
            bound = 1 / math.sqrt(self.in_channels)
            self.channel.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project one feature map.

        Parameters
        ----------
        x : Tensor of shape (B, C, H, W)

        Returns
        -------
        Tensor of shape (B, K)
        """
        b, c, h, w = x.shape
        if (c, h * w) != (self.in_channels, self.n_positions):
            raise ValueError(
                f"feature map of shape {(c, h, w)} does not match this projection "
                f"({self.in_channels} channels x {self.n_positions} positions)"
            )
        x = x.reshape(b, c, h * w)
        if self.n_positions <= self.in_channels:
            # one (K, C) @ (C, B*P) GEMM (forward and weight gradient) beats B small ones
            xr = x.permute(1, 0, 2).reshape(c, b * h * w)
            y = (self.channel @ xr).view(-1, b, h * w)  # (K, B, P)
            out = torch.einsum("kbp,kp->bk", y, self.spatial)
        else:
            y = torch.matmul(x, self.spatial.t())  # (B, C, K)
            out = torch.einsum("bck,kc->bk", y, self.channel)
        return self.drop(self.norm(out))


class GroupLinear(nn.Module):
    """One linear map per group (subject), applied per sample by group index.

    All groups' maps are evaluated in one matrix product and each sample's
    row is gathered, so a mixed-subject batch costs one kernel.

    Parameters
    ----------
    n_groups : int
    in_features, out_features : int
    identity_init : bool, default=True
        Start every group at the identity (requires in == out), so that
        subjects begin shared and diverge only as the data ask.
    """

    def __init__(
        self, n_groups: int, in_features: int, out_features: int, identity_init: bool = True
    ) -> None:
        super().__init__()
        self.n_groups, self.in_features, self.out_features = n_groups, in_features, out_features
        self.weight = nn.Parameter(torch.empty(n_groups, out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(n_groups, out_features))
        with torch.no_grad():
            if identity_init and in_features == out_features:
                self.weight.copy_(torch.eye(in_features).expand(n_groups, -1, -1))
            else:
                bound = 1 / math.sqrt(in_features)
                self.weight.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """Apply each sample's group map.

        Parameters
        ----------
        x : Tensor of shape (B, in_features)
        group : LongTensor of shape (B,)

        Returns
        -------
        Tensor of shape (B, out_features)
        """
        y = x @ self.weight.reshape(-1, self.in_features).t()  # (B, G * out)
        y = y.view(x.shape[0], self.n_groups, self.out_features)
        y = y[torch.arange(x.shape[0], device=x.device), group]
        return y + self.bias[group]


class PCAEmbedding(nn.Module):
    """Frozen linear map from the latent space to every group vertex.

    ``out = z @ components + mean``; components and mean are buffers, so they
    are saved with the model and never trained.

    Parameters
    ----------
    components : Tensor of shape (latent_dim, n_group_vertices)
    mean : Tensor of shape (n_group_vertices,)
    """

    def __init__(self, components: torch.Tensor, mean: torch.Tensor) -> None:
        super().__init__()
        if components.ndim != 2 or mean.shape != components.shape[1:]:
            raise ValueError(
                f"components {tuple(components.shape)} and mean "
                f"{tuple(mean.shape)} do not fit together"
            )
        self.register_buffer("components", components.float().contiguous())
        self.register_buffer("mean", mean.float().contiguous())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.mean.to(z.dtype), z, self.components.to(z.dtype))


class Readout(nn.Module):
    """Interface of a multi-subject readout: features + subject -> group space."""

    def forward(self, features: Sequence[torch.Tensor], subject: torch.Tensor) -> torch.Tensor:
        """Predict responses.

        Parameters
        ----------
        features : sequence of Tensor of shape (B, C_l, H_l, W_l)
        subject : LongTensor of shape (B,)

        Returns
        -------
        Tensor of shape (B, n_group_vertices)
        """
        raise NotImplementedError


class GroupLinReadout(Readout):
    """The reference GroupLin head (see the module docstring).

    Parameters
    ----------
    feature_shapes : sequence of (C, H, W)
        Shapes of the trunk's chosen feature maps.
    n_subjects : int
    components : Tensor of shape (latent_dim, n_group_vertices)
        Group-PCA components (rows); the latent size is their number.
    mean : Tensor of shape (n_group_vertices,)
    hidden_dim : int, default=1024
    dropout : float, default=0.9
    """

    def __init__(
        self,
        feature_shapes: Sequence[tuple[int, int, int]],
        n_subjects: int,
        components: torch.Tensor,
        mean: torch.Tensor,
        hidden_dim: int = 1024,
        dropout: float = 0.9,
    ) -> None:
        super().__init__()
        latent_dim = components.shape[0]
        self.projections = nn.ModuleList(
            FactorizedProjection(c, h * w, hidden_dim, dropout) for c, h, w in feature_shapes
        )
        self.shared = nn.Linear(hidden_dim, latent_dim)
        # start at the training mean (the PCA mean), as neuralpredictors initialises
        # readout biases; gradients still reach this layer since its input is not zero
        nn.init.zeros_(self.shared.weight)
        nn.init.zeros_(self.shared.bias)
        self.subject = GroupLinear(n_subjects, latent_dim, latent_dim)
        self.embedding = PCAEmbedding(components, mean)

    def latent(self, features: Sequence[torch.Tensor], subject: torch.Tensor) -> torch.Tensor:
        """The subject-specific latent, shape (B, latent_dim)."""
        if len(features) != len(self.projections):
            raise ValueError(f"expected {len(self.projections)} feature maps, got {len(features)}")
        h = torch.stack([p(f) for p, f in zip(self.projections, features)]).mean(0)
        return self.subject(self.shared(h), subject)

    def forward(self, features: Sequence[torch.Tensor], subject: torch.Tensor) -> torch.Tensor:
        return self.embedding(self.latent(features, subject))
