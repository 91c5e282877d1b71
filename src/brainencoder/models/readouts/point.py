"""``point``: every vertex reads its features at a learned image location.

After the first place of Algonauts 2023 (the Memory Encoding Model's "retina
mapper" and layer selector; Yang et al. 2023). Per trunk layer ``l``:

1. a shared 1x1 projection of the map to ``D`` channels (+ BatchNorm): the
   per-vertex sampling below then costs ``B x D x V`` values per layer, not
   ``B x C x V`` (at the challenge's shape, C = 768 vs D = 64);
2. every vertex ``v`` samples that map at its own learned position
   ``p[l, v]`` in [-1, 1]^2: bilinearly (``sampling="bilinear"``) or as a
   normalized Gaussian of learned width around it (``sampling="gaussian"``,
   the default: a wide start gives every position a gradient from the whole
   map, where a bilinear sample only sees its four neighbours);

then the layers are mixed per vertex by a softmax layer selector ``s[v, :]``
(its entropy is penalized, so each vertex settles on few layers), and a
per-vertex linear map gives the response::

    y[b, v] = bias[v] + sum_d w[v, d] * sum_l softmax(s[v])_l * sample_l(b, d, v)

Each subject owns a per-vertex gain and offset on top (``y * g_s + o_s``).
Parameters are O(V * (L * 4 + D)) (4.45 M at the challenge's 39,548
vertices, 8 subjects, 6 layers, D = 64; grouplin has 25.2 M) and activations
O(B * D * V * L).
The readout needs spatial maps (B, C, H, W): ViT trunks must use
``model.prefix_tokens: false``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...util.errors import ConfigError
from .base import Readout, register_readout
from .subject_layers import SubjectAffine, affine_per_subject

__all__ = ["PointOptions", "PointReadout"]


@dataclass
class PointOptions:
    """Options of ``point``.

    Attributes
    ----------
    channels : int
        D, channels of each layer's 1x1 projection.
    sampling : {"gaussian", "bilinear"}
        How a vertex reads the map at its position.
    init_width : float
        Starting Gaussian width (standard deviation, in units of the map's
        half-width; 1 spans the whole map; widths stay below 4). A wide start
        lets every position feel the whole map.
    position_spread : float
        Positions start uniformly at random in [-spread, spread]^2.
    selector_entropy : float
        Weight of the mean layer-selector entropy in the regularizer.
    position_speed : float
        Positions and widths move this many times faster than the other
        parameters under the same learning rate (they are stored divided by
        it): at the lr that suits the weights, a position would cross the map
        only after thousands of steps.
    dropout : float
        Dropout on the sampled per-vertex features.
    norm : bool
        BatchNorm after each 1x1 projection.
    """

    channels: int = 64
    sampling: Literal["gaussian", "bilinear"] = "gaussian"
    init_width: float = 1.0
    position_spread: float = 0.8
    selector_entropy: float = 0.01
    position_speed: float = 20.0
    dropout: float = 0.1
    norm: bool = True

    def validate(self) -> None:
        if self.channels < 1:
            raise ConfigError(f"'channels' must be positive; got {self.channels}")
        if not self.init_width > 0:
            raise ConfigError(f"'init_width' must be > 0; got {self.init_width}")
        if not 0 < self.position_spread < 1:
            raise ConfigError(f"'position_spread' must be in (0, 1); got {self.position_spread}")
        if not self.position_speed > 0:
            raise ConfigError(f"'position_speed' must be > 0; got {self.position_speed}")
        if self.selector_entropy < 0:
            raise ConfigError(f"'selector_entropy' must be >= 0; got {self.selector_entropy}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"'dropout' must be in [0, 1); got {self.dropout}")


def spatial_maps(feature_shapes: Sequence[tuple[int, ...]], readout: str) -> None:
    """Refuse token sequences: a readout that needs (C, H, W) maps says how to get them."""
    for shape in feature_shapes:
        if len(shape) != 3:
            raise ConfigError(
                f"the {readout!r} readout needs spatial feature maps (C, H, W); the trunk "
                f"gives {shape}: set model.prefix_tokens: false"
            )


@register_readout("point", PointOptions)
class PointReadout(Readout):
    """Learned per-vertex positions and layer selection (see the module docstring)."""

    vertex_axes: ClassVar[dict[str, int]] = {
        "positions": 1,
        "log_width": 1,
        "selector": 0,
        "weight": 0,
        "bias": 0,
    }

    def __init__(
        self,
        feature_shapes: Sequence[Sequence[int]],
        subjects: Sequence[str],
        n_vertices: int,
        options: PointOptions,
    ) -> None:
        super().__init__(feature_shapes, subjects, n_vertices, options)
        spatial_maps(self.feature_shapes, "point")
        o, n_layers = options, len(self.feature_shapes)
        self.reduce = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(shape[0], o.channels, 1, bias=not o.norm),
                nn.BatchNorm2d(o.channels) if o.norm else nn.Identity(),
            )
            for shape in self.feature_shapes
        )
        spread = torch.empty(n_layers, n_vertices, 2).uniform_(
            -o.position_spread, o.position_spread
        )
        speed = o.position_speed  # stored / speed: an optimizer step moves them speed x faster
        self.positions = nn.Parameter(torch.atanh(spread) / speed)  # tanh keeps them on the map
        self.log_width = nn.Parameter(
            torch.full((n_layers, n_vertices), math.log(o.init_width) / speed)
        )
        if o.sampling == "bilinear":
            self.log_width.requires_grad_(False)
        self.selector = nn.Parameter(torch.zeros(n_vertices, n_layers))
        self.weight = nn.Parameter(torch.zeros(n_vertices, o.channels))  # starts at the mean
        self.bias = nn.Parameter(torch.zeros(n_vertices))
        self.dropout = nn.Dropout(o.dropout)
        self._add_initial_subjects()

    def make_subject_module(self) -> nn.Module:
        return SubjectAffine(self.n_vertices)

    def no_weight_decay(self) -> set[str]:
        """Positions, widths and selector logits are not pulled towards zero."""
        return {"positions", "log_width", "selector", "bias"}

    def initialize(self, mean_response: torch.Tensor) -> None:
        """Start the prediction near the training mean."""
        with torch.no_grad():
            self.bias.copy_(mean_response)

    def position(self, layer: int) -> torch.Tensor:
        """Every vertex's position on layer ``layer``'s map, (V, 2) as (x, y) in (-1, 1)."""
        return torch.tanh(self.positions[layer] * self.options.position_speed)

    def width(self, layer: int) -> torch.Tensor:
        """Every vertex's Gaussian width on layer ``layer`` (half-widths of the map), (V,)."""
        log_width = self.log_width[layer] * self.options.position_speed
        return torch.exp(log_width.clamp(max=math.log(4.0)))

    def layer_weights(self) -> torch.Tensor:
        """Softmax layer selection per vertex, shape (n_vertices, n_layers)."""
        return torch.softmax(self.selector.float(), dim=1)

    def regularizer(self) -> torch.Tensor:
        """``selector_entropy`` times the mean entropy of the layer selection."""
        p = self.layer_weights()
        entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(1).mean()
        return self.options.selector_entropy * entropy

    def sample(self, fmap: torch.Tensor, layer: int, scale: torch.Tensor) -> torch.Tensor:
        """Read a (B, D, H, W) map at every vertex's position, times ``scale`` (V,).

        Returns
        -------
        Tensor of shape (B, D, n_vertices)
        """
        pos = self.position(layer).to(fmap.dtype)  # (V, 2) as (x, y)
        if self.options.sampling == "bilinear":
            grid = pos[None, :, None, :].expand(fmap.shape[0], -1, -1, -1)
            sampled = F.grid_sample(fmap, grid, mode="bilinear", align_corners=False)[..., 0]
            return sampled * scale
        h, w = fmap.shape[-2:]
        ys = (torch.arange(h, device=fmap.device, dtype=fmap.dtype) + 0.5) / h * 2 - 1
        xs = (torch.arange(w, device=fmap.device, dtype=fmap.dtype) + 0.5) / w * 2 - 1
        d2 = (pos[:, 0:1] - xs.repeat(h)[None]) ** 2 + (
            pos[:, 1:2] - ys.repeat_interleave(w)[None]
        ) ** 2  # (V, H*W), positions in row-major order
        width = self.width(layer).to(fmap.dtype)[:, None]
        pool = torch.softmax(-d2 / (2 * width**2), dim=1)  # a normalized Gaussian per vertex
        # the scale folded into the pooling weights: no (B, D, V) multiply
        return fmap.flatten(2) @ (pool * scale[:, None]).t()

    def forward(self, features: Sequence[torch.Tensor], subject: torch.Tensor) -> torch.Tensor:
        self.check_features(features)
        select = self.layer_weights()
        mixed = None
        for layer, (x, reduce) in enumerate(zip(features, self.reduce)):
            part = self.sample(reduce(x), layer, select[:, layer].to(x.dtype))
            mixed = part if mixed is None else mixed + part
        mixed = self.dropout(mixed)  # (B, D, V)
        out = torch.einsum("bdv,vd->bv", mixed, self.weight.to(mixed.dtype)) + self.bias
        return affine_per_subject(out, subject, self.subject_modules())
