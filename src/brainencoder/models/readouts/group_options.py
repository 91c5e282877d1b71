"""What the group-PCA readouts share: their options and their construction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from ...util.errors import ConfigError
from .base import Readout
from .layers import LayerProjection, average_projections, pca_embedding

if TYPE_CHECKING:
    from ..pca import GroupPCA

__all__ = ["PCAReadout", "PCAReadoutOptions"]


@dataclass
class PCAReadoutOptions:
    """Options of a readout that predicts through a frozen group-PCA embedding.

    Attributes
    ----------
    hidden_dim : int
        Channels K of each layer's factorized projection.
    latent_dim : int or "auto"
        Group-PCA components (see :func:`brainencoder.models.pca.resolve_n_components`).
    dropout : float
        Dropout rate (where it acts depends on the readout).
    norm : bool
        BatchNorm after each layer's projection.
    embedding_scale : {"none", "std"}
        Rows of the embedding: the principal components, or the components
        times their standard deviation.
    extra_vertices : int
        Vertices added after the PCA was fitted (by ``adapt`` for a new
        subject's vertices outside the group space); set by the code.
    """

    hidden_dim: int = 1024
    latent_dim: int | str = 2048
    dropout: float = 0.9
    norm: bool = True
    embedding_scale: Literal["none", "std"] = "none"
    extra_vertices: int = 0

    def validate(self) -> None:
        if self.extra_vertices < 0:
            raise ConfigError(f"'extra_vertices' must be >= 0; got {self.extra_vertices}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"'dropout' must be in [0, 1); got {self.dropout}")
        if self.hidden_dim < 1:
            raise ConfigError(f"'hidden_dim' must be positive; got {self.hidden_dim}")
        if isinstance(self.latent_dim, str) and self.latent_dim != "auto":
            raise ConfigError(
                f"'latent_dim' must be a positive int or 'auto'; got {self.latent_dim!r}"
            )
        if isinstance(self.latent_dim, int) and self.latent_dim < 1:
            raise ConfigError(
                f"'latent_dim' must be a positive int or 'auto'; got {self.latent_dim}"
            )


class PCAReadout(Readout):
    """Per-layer projections averaged, a shared map, per-subject maps, a frozen embedding.

    ``forward = embedding(latent(hidden(features), subject))`` (plus the
    embedding's mean once more when ``mean_scale`` is 2, as the original).
    Subclasses set where dropout acts and how projections start
    (``dropout_on``, ``projection_init``), build ``self.shared`` in
    :meth:`make_shared`, and define :meth:`make_subject_module` and :meth:`latent`.
    """

    needs = frozenset({"pca"})
    trains_added_vertices = False  # a new subject's own vertices: ridge from its latent
    dropout_on: ClassVar[str] = "input"
    projection_init: ClassVar[str] = "uniform"
    mean_scale: ClassVar[int] = 1

    def __init__(
        self,
        feature_shapes: Sequence[Sequence[int]],
        n_vertices: int,
        options: PCAReadoutOptions,
        pca: GroupPCA | None = None,
    ) -> None:
        super().__init__(feature_shapes, n_vertices, options)
        o = options
        self.projections = nn.ModuleList(
            LayerProjection(
                s, o.hidden_dim, o.dropout, o.norm, self.dropout_on, self.projection_init
            )
            for s in self.feature_shapes
        )
        self.embedding = pca_embedding(
            o.latent_dim, n_vertices, pca, o.embedding_scale, o.extra_vertices
        )
        o.latent_dim = self.embedding.latent_dim
        self.shared = self.make_shared()

    def make_shared(self) -> nn.Module:
        raise NotImplementedError

    def initialize(self, mean_response: torch.Tensor) -> None:
        """Set the embedding's bias (the PCA mean) to ``mean_response``."""
        with torch.no_grad():
            self.embedding.mean.copy_(mean_response)

    def hidden(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Mean over layers of the layer projections, shape (B, hidden_dim)."""
        return average_projections(self.projections, features)

    def latent(self, hidden: torch.Tensor, subject: torch.Tensor) -> torch.Tensor:
        """The latent fed to the embedding, shape (B, latent_dim)."""
        raise NotImplementedError

    def from_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Latent (B, latent_dim) -> prediction (B, n_vertices)."""
        out = self.embedding(z)
        for _ in range(self.mean_scale - 1):
            out = out + self.embedding.full_mean(z.dtype)
        return out

    def forward(self, features: Sequence[torch.Tensor], subject: torch.Tensor) -> torch.Tensor:
        return self.from_latent(self.latent(self.hidden(features), subject))

    def extend_vertices(self, old_to_new: torch.Tensor, added: torch.Tensor) -> None:
        """Grow the vertex space (a new subject's own vertices at ``added``, zero maps)."""
        self.embedding.extend(old_to_new, added)
        self.n_vertices = self.embedding.n_vertices
        self.options.extra_vertices = self.embedding.n_extra

    def set_added_vertices(
        self, positions: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
    ) -> None:
        """Map the latent to added vertices: prediction = z @ weight + bias there."""
        self.embedding.set_columns(positions, weight, bias / self.mean_scale)

    def finish_adaptation(
        self,
        subject: str,
        features: Sequence[torch.Tensor],
        target: torch.Tensor,
        columns: torch.Tensor,
        alphas: Sequence[float],
    ) -> int:
        """Ridge (alpha by 5-fold CV per vertex) from the subject's latent to its added vertices.

        The frozen embedding covers only the vertices the PCA was fitted on; a
        new subject's own vertices get a linear map from its latent instead.
        """
        if columns.numel() == 0:
            return 0
        from ..solvers import ridge_cv

        index = self.subjects.index(subject)
        with torch.no_grad():
            hidden = self.hidden(features)
            subj = torch.full((hidden.shape[0],), index, dtype=torch.long)
            z = self.latent(hidden, subj).float().numpy()
        fit = ridge_cv(z, target.float().numpy(), np.asarray(alphas, dtype=np.float64), 5)
        self.set_added_vertices(
            columns,
            torch.from_numpy(np.asarray(fit.coef, dtype=np.float32)),
            torch.from_numpy(np.asarray(fit.intercept, dtype=np.float32)),
        )
        return int(columns.numel())
