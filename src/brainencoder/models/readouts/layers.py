"""Building blocks shared by readouts.

- :class:`FactorizedProjection`: a learned spatial pooling per output channel
  times a channel projection (the "factorized" readout of neuralpredictors);
- :class:`PCAEmbedding`: a frozen linear map from a latent space to every group
  vertex (group PCA).

The per-subject pieces are in :mod:`.subject_layers`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "FactorizedProjection",
    "LayerProjection",
    "PCAEmbedding",
    "average_projections",
    "pca_embedding",
    "random_basis",
]


class FactorizedProjection(nn.Module):
    """Factorized spatial x channel projection of one feature map (no bias).

    ``out[b, k] = sum_{c, p} x[b, c, p] * spatial[k, p] * channel[k, c]`` where
    ``p`` runs over every position of the map (H*W for a convnet map, the
    tokens for a ViT map, prefix tokens included when the trunk returns them).
    Of the two contraction orders, the one with the smaller intermediate is
    used (channels first when there are fewer positions than channels, as in
    ViTs; positions first otherwise); the (B, K, C, P) product never exists.

    Parameters
    ----------
    in_channels : int
        C of the input map.
    n_positions : int
        P, the number of positions of the input map.
    hidden_dim : int
        K, the number of output channels.
    init : {"uniform", "average"}, default="uniform"
        "uniform": both factors like ``nn.Linear`` (U(-1/sqrt(fan_in), ...)),
        as the original GroupLin entry; "average": spatial weights start near
        uniform average pooling.
    """

    def __init__(
        self, in_channels: int, n_positions: int, hidden_dim: int, init: str = "uniform"
    ) -> None:
        super().__init__()
        self.in_channels, self.n_positions, self.init = in_channels, n_positions, init
        self.spatial = nn.Parameter(torch.empty(hidden_dim, n_positions))
        self.channel = nn.Parameter(torch.empty(hidden_dim, in_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            if self.init == "average":
                self.spatial.normal_(1.0, 0.1).div_(self.n_positions)
            elif self.init == "uniform":
                bound = 1 / math.sqrt(self.n_positions)
                self.spatial.uniform_(-bound, bound)
            else:
                raise ValueError(f"init must be 'uniform' or 'average'; got {self.init!r}")
            bound = 1 / math.sqrt(self.in_channels)
            self.channel.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project one feature map.

        Parameters
        ----------
        x : Tensor of shape (B, C, *positions)
            (B, C, H, W) maps or (B, C, T) token sequences.

        Returns
        -------
        Tensor of shape (B, K)
        """
        b, c = x.shape[:2]
        p = math.prod(x.shape[2:])
        if (c, p) != (self.in_channels, self.n_positions):
            raise ValueError(
                f"feature map of shape {tuple(x.shape[1:])} does not match this projection "
                f"({self.in_channels} channels x {self.n_positions} positions)"
            )
        x = x.reshape(b, c, p)
        if p <= c:
            # one (K, C) @ (C, B*P) GEMM (forward and weight gradient) beats B small ones
            xr = x.permute(1, 0, 2).reshape(c, b * p)
            y = (self.channel @ xr).view(-1, b, p)  # (K, B, P)
            return torch.einsum("kbp,kp->bk", y, self.spatial)
        y = torch.matmul(x, self.spatial.t())  # (B, C, K)
        return torch.einsum("bck,kc->bk", y, self.channel)


class PCAEmbedding(nn.Module):
    """Frozen linear map from the latent space to every group vertex.

    ``out = z @ components + mean``; components and mean are buffers, so they
    are saved with the model and never trained.

    Vertices added after the PCA was fitted (a new subject's, see
    :meth:`extend`) form an ``extra`` block with its own buffers; the original
    block is computed exactly as before, so its outputs stay bit-identical.

    Parameters
    ----------
    components : Tensor of shape (latent_dim, n_base_vertices)
    mean : Tensor of shape (n_base_vertices,)
    n_extra : int, default=0
        Size of the extra block (placeholders, filled by loading a state dict).
    """

    def __init__(self, components: torch.Tensor, mean: torch.Tensor, n_extra: int = 0) -> None:
        super().__init__()
        if components.ndim != 2 or mean.shape != components.shape[1:]:
            raise ValueError(
                f"components {tuple(components.shape)} and mean "
                f"{tuple(mean.shape)} do not fit together"
            )
        self.register_buffer("components", components.float().contiguous())
        self.register_buffer("mean", mean.float().contiguous())
        self.n_extra = 0
        if n_extra:
            n_base = components.shape[1]
            self._set_extra(
                torch.arange(n_base),
                torch.arange(n_base, n_base + n_extra),
                torch.zeros(components.shape[0], n_extra),
                torch.zeros(n_extra),
            )

    def _set_extra(self, base_index, extra_index, extra_components, extra_mean) -> None:
        self.n_extra = int(extra_index.numel())
        for name, value in (
            ("base_index", base_index.long()),
            ("extra_index", extra_index.long()),
            ("extra_components", extra_components.float().contiguous()),
            ("extra_mean", extra_mean.float().contiguous()),
        ):
            if name in self._buffers:
                self._buffers[name] = value.to(self.components.device)
            else:
                self.register_buffer(name, value.to(self.components.device))

    @property
    def latent_dim(self) -> int:
        return self.components.shape[0]

    @property
    def n_vertices(self) -> int:
        return self.components.shape[1] + self.n_extra

    def _place(self, base: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        out = base.new_empty((*base.shape[:-1], self.n_vertices))
        out[..., self.base_index] = base
        out[..., self.extra_index] = extra
        return out

    def full_mean(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The bias of every vertex, shape (n_vertices,)."""
        if not self.n_extra:
            return self.mean.to(dtype)
        return self._place(self.mean.to(dtype), self.extra_mean.to(dtype))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) -> (B, n_vertices)."""
        base = torch.addmm(self.mean.to(z.dtype), z, self.components.to(z.dtype))
        if not self.n_extra:
            return base
        extra = torch.addmm(self.extra_mean.to(z.dtype), z, self.extra_components.to(z.dtype))
        return self._place(base, extra)

    def extend(self, old_to_new: torch.Tensor, added: torch.Tensor) -> None:
        """Renumber the vertices into a grown space and add zero columns at ``added``.

        Parameters
        ----------
        old_to_new : LongTensor of shape (n_vertices,)
            New index of every current vertex.
        added : LongTensor of shape (n_added,)
            New indices of the added vertices (filled later with :meth:`set_columns`).
        """
        old_to_new = torch.as_tensor(old_to_new, dtype=torch.long)
        added = torch.as_tensor(added, dtype=torch.long)
        n_base = self.components.shape[1]
        if self.n_extra:
            base_index = old_to_new[self.base_index.cpu()]
            extra_index = torch.cat([old_to_new[self.extra_index.cpu()], added])
            extra_components = torch.cat(
                [self.extra_components.cpu(), torch.zeros(self.latent_dim, added.numel())], 1
            )
            extra_mean = torch.cat([self.extra_mean.cpu(), torch.zeros(added.numel())])
        else:
            base_index = old_to_new[:n_base]
            extra_index = added
            extra_components = torch.zeros(self.latent_dim, added.numel())
            extra_mean = torch.zeros(added.numel())
        self._set_extra(base_index, extra_index, extra_components, extra_mean)

    def set_columns(
        self, positions: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
    ) -> None:
        """Set the map to vertices ``positions`` (all in the extra block).

        Parameters
        ----------
        positions : LongTensor of shape (k,)
        weight : Tensor of shape (latent_dim, k)
        bias : Tensor of shape (k,)
        """
        lookup = {int(v): i for i, v in enumerate(self.extra_index.tolist())}
        try:
            cols = torch.tensor([lookup[int(p)] for p in positions], dtype=torch.long)
        except KeyError as exc:
            raise ValueError(f"vertex {exc} is not in the extra block") from None
        with torch.no_grad():
            self.extra_components[:, cols] = weight.to(self.extra_components)
            self.extra_mean[cols] = bias.to(self.extra_mean)


def random_basis(latent_dim: int, n_vertices: int, seed: int = 0) -> torch.Tensor:
    """A random basis with unit-norm rows, shape (latent_dim, n_vertices).

    Orthonormal (QR) when small; for large shapes (a placeholder about to be
    overwritten by stored weights) Gaussian rows scaled to unit norm in
    expectation, which are nearly orthogonal in high dimension.
    """
    if latent_dim > n_vertices:
        raise ValueError(f"latent_dim {latent_dim} exceeds the {n_vertices} group vertices")
    gen = torch.Generator().manual_seed(seed)
    basis = torch.randn(n_vertices, latent_dim, generator=gen)
    if latent_dim * n_vertices <= 2**22:
        return torch.linalg.qr(basis)[0].t().contiguous()
    return (basis.t() / n_vertices**0.5).contiguous()


class LayerProjection(nn.Module):
    """Dropout, :class:`FactorizedProjection` and BatchNorm of one trunk layer.

    Parameters
    ----------
    shape : tuple of int
        (C, *positions) of the layer's feature map.
    hidden_dim : int
    dropout : float
    norm : bool
        BatchNorm1d after the projection.
    dropout_on : {"input", "output"}
        "input": dropout on the feature map, then projection and norm (the
        original GroupLin); "output": projection, norm, then dropout.
    init : {"uniform", "average"}
        See :class:`FactorizedProjection`.
    """

    def __init__(
        self,
        shape: Sequence[int],
        hidden_dim: int,
        dropout: float,
        norm: bool = True,
        dropout_on: str = "input",
        init: str = "uniform",
    ) -> None:
        super().__init__()
        if dropout_on not in ("input", "output"):
            raise ValueError(f"dropout_on must be 'input' or 'output'; got {dropout_on!r}")
        self.dropout_on = dropout_on
        self.drop = nn.Dropout(dropout)
        self.proj = FactorizedProjection(shape[0], math.prod(shape[1:]), hidden_dim, init)
        self.norm = nn.BatchNorm1d(hidden_dim) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *positions) -> (B, hidden_dim)."""
        if self.dropout_on == "input":
            return self.norm(self.proj(self.drop(x)))
        return self.drop(self.norm(self.proj(x)))


def average_projections(
    projections: Sequence[nn.Module], features: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Mean over layers of each layer's projection, shape (B, hidden_dim)."""
    if len(features) != len(projections):
        raise ValueError(f"expected {len(projections)} feature maps, got {len(features)}")
    return torch.stack([p(f) for p, f in zip(projections, features)]).mean(0)


def pca_embedding(
    latent_dim: int | str, n_vertices: int, pca: object | None, scale: str, n_extra: int = 0
) -> PCAEmbedding:
    """The frozen group-PCA embedding of a readout.

    Parameters
    ----------
    latent_dim : int or "auto"
        Number of components (see :func:`brainencoder.models.pca.resolve_n_components`).
    n_vertices : int
    pca : GroupPCA or None
        Without it (a model being rebuilt from a file, or shape tests) the
        embedding is a random orthonormal basis with zero mean, to be
        overwritten by the stored weights; ``latent_dim`` must then be an int.
    scale : {"none", "std"}
        "none": rows are the principal components (the original entry);
        "std": rows scaled by each component's standard deviation.
    n_extra : int, default=0
        Vertices added after the PCA (placeholders; see :meth:`PCAEmbedding.extend`).
    """
    from ...util.errors import ConfigError

    if pca is None:
        if not isinstance(latent_dim, int):
            raise ConfigError("without a fitted PCA, 'latent_dim' must be an int")
        n_base = n_vertices - n_extra
        return PCAEmbedding(random_basis(latent_dim, n_base), torch.zeros(n_base), n_extra)
    from ..pca import resolve_n_components

    available = pca.components.shape[0]
    k = resolve_n_components(latent_dim, pca.n_samples, n_vertices)
    if latent_dim == "auto":
        k = min(k, available)
    if k > available:
        raise ConfigError(
            f"latent_dim {k} is larger than the {available} components of the given PCA"
        )
    if pca.components.shape[1] != n_vertices:
        raise ConfigError(
            f"the PCA has {pca.components.shape[1]} vertices but the group space {n_vertices}"
        )
    components = torch.as_tensor(pca.components[:k], dtype=torch.float32)
    if scale == "std":
        std = torch.as_tensor(pca.explained_variance[:k], dtype=torch.float32).sqrt()
        components = components * std[:, None]
    return PCAEmbedding(components, torch.as_tensor(pca.mean, dtype=torch.float32))
