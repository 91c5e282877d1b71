"""Options shared by the group-PCA readouts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ...errors import ConfigError

__all__ = ["PCAReadoutOptions"]


@dataclass
class PCAReadoutOptions:
    """Options of a readout that predicts through a frozen group-PCA embedding.

    Attributes
    ----------
    hidden_dim : int
        Channels K of each layer's factorized projection.
    latent_dim : int or "auto"
        Group-PCA components (see :func:`brainencoder.pca.resolve_n_components`).
    dropout : float
        Dropout rate (where it acts depends on the readout).
    norm : bool
        BatchNorm after each layer's projection.
    embedding_scale : {"none", "std"}
        Rows of the embedding: the principal components, or the components
        times their standard deviation.
    """

    hidden_dim: int = 1024
    latent_dim: int | str = 2048
    dropout: float = 0.9
    norm: bool = True
    embedding_scale: Literal["none", "std"] = "none"

    def validate(self) -> None:
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
