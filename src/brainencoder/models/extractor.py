"""Image features for the ridge baselines: downsampled pixels or pooled trunk maps.

:class:`FeatureSpec` says which (pixels, or spatially pooled maps of chosen
trunk layers: mean over space or a ``grid`` x ``grid`` average, optionally
PCA-reduced); :class:`FeatureExtractor` computes them from uint8 images.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.transforms import resize
from ..util.errors import ConfigError
from .trunk import Trunk, split_trunk_name

__all__ = ["FeatureExtractor", "FeatureSpec"]


@dataclass
class FeatureSpec:
    """Which image features a baseline regresses on.

    Attributes
    ----------
    kind : {"trunk", "pixels"}
    trunk, trunk_family, layers, pretrained, trunk_weights, img_size, trunk_kwargs :
        As in :class:`~brainencoder.models.encoder.EncoderConfig` (kind "trunk";
        ``trunk="hf:facebook/dinov2-base"`` is a Hugging Face trunk).
    pooling : {"mean", "grid"}
        Average each map over space, or over a ``grid`` x ``grid`` partition.
    grid : int
    pixel_size : int
        Side of the downsampled image (kind "pixels").
    pca_components : int or None
        Reduce the features with a PCA fitted on the training images.
    seed : int
        Seed of the trunk's random initialisation (when not pretrained).
    """

    kind: str = "trunk"
    trunk: str = "resnet18"
    layers: list[Any] = field(default_factory=lambda: ["layer1", "layer2", "layer3"])
    pretrained: bool = False
    trunk_weights: str | None = None
    img_size: int | None = 112
    pooling: str = "grid"
    grid: int = 2
    pixel_size: int = 32
    pca_components: int | None = None
    seed: int = 0
    trunk_family: str = "timm"
    trunk_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:  # "hf:NAME" -> trunk_family "hf", trunk "NAME"
        self.trunk_family, self.trunk = split_trunk_name(self.trunk, self.trunk_family)

    def validate(self) -> None:
        if self.kind not in ("trunk", "pixels"):
            raise ConfigError(f"'kind' must be one of {{'trunk', 'pixels'}}; got {self.kind!r}")
        if self.pooling not in ("mean", "grid"):
            raise ConfigError(f"'pooling' must be one of {{'mean', 'grid'}}; got {self.pooling!r}")


class FeatureExtractor:
    """Turns uint8 images into the feature vectors of a :class:`FeatureSpec`."""

    def __init__(
        self, spec: FeatureSpec, trunk_state: dict[str, torch.Tensor] | None = None
    ) -> None:
        spec.validate()
        self.spec = spec
        self.trunk = None
        if spec.kind == "trunk":
            torch.manual_seed(spec.seed)
            pretrained = spec.pretrained and trunk_state is None
            self.trunk = Trunk(
                spec.trunk,
                spec.layers,
                pretrained=pretrained,
                weights=spec.trunk_weights if pretrained else None,
                img_size=spec.img_size,
                family=spec.trunk_family,
                **spec.trunk_kwargs,
            ).eval()
            # what rebuilds the trunk without files goes into a saved ridge model
            self.spec = dataclasses.replace(spec, trunk_kwargs=dict(self.trunk.model_kwargs))
            if trunk_state is not None:
                self.trunk.load_state_dict(trunk_state)
            dc = self.trunk.data_config
            self.mean = torch.tensor(dc["mean"]).view(1, 3, 1, 1)
            self.std = torch.tensor(dc["std"]).view(1, 3, 1, 1)
        self.pca_mean: np.ndarray | None = None
        self.pca_components: np.ndarray | None = None

    @torch.no_grad()
    def raw(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Features before PCA, shape (n_images, n_raw_features)."""
        out = []
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.array(images[start : start + batch_size]))
            if self.trunk is None:
                x = resize(batch, self.spec.pixel_size)
                out.append(x.flatten(1).numpy())
                continue
            x = (resize(batch, self.trunk.input_size) - self.mean) / self.std
            pooled = []
            for f in self.trunk(x):
                g = 1 if self.spec.pooling == "mean" else self.spec.grid
                pooled.append(F.adaptive_avg_pool2d(f, g).flatten(1))
            out.append(torch.cat(pooled, 1).numpy())
        return np.concatenate(out).astype(np.float32)

    def fit_pca(self, features: np.ndarray) -> None:
        """Fit the optional PCA reduction on training features."""
        if self.spec.pca_components is None:
            return
        from sklearn.decomposition import PCA

        k = self.spec.pca_components
        if k > min(features.shape):
            raise ConfigError(
                f"pca_components {k} exceeds min(n_images, n_features) = {min(features.shape)}"
            )
        pca = PCA(k, random_state=0).fit(features)
        self.pca_mean = np.ascontiguousarray(pca.mean_, dtype=np.float32)
        self.pca_components = np.ascontiguousarray(pca.components_, dtype=np.float32)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Final features, shape (n_images, n_features)."""
        feats = self.raw(images)
        if self.pca_components is not None:
            feats = (feats - self.pca_mean) @ self.pca_components.T
        return feats
