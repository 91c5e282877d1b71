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
O(B * D * V): the layers are read side by side in one matrix product.
The readout needs spatial maps (B, C, H, W): ViT trunks must use
``model.prefix_tokens: false``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...util.errors import ConfigError
from .base import Readout, register_readout
from .personal import personal_forward
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
    max_grid : int
        Average-pool each projected map to at most ``max_grid`` x ``max_grid``
        positions before the vertices read it (0: the trunk's own size). The
        reading costs B x D x positions x V per layer, so a 28 x 28 map pooled
        to 14 x 14 costs a quarter.
    surround : bool
        Difference-of-Gaussians receptive fields: each vertex also subtracts
        a wider Gaussian (``surround_scale`` times its width) with a learned
        per-layer weight (starts at 0: the centre-only field).
    surround_scale : float
    output : {"linear", "softplus"}
        The per-vertex output stage: linear, or ``d + a * softplus(d)`` of the
        linear drive ``d`` with a learned ``a`` per vertex (starts at 0: the
        linear readout), a monotone rectifying nonlinearity as in pRF models.
    shared_rank : int
        Add a low-rank path shared by all vertices: the globally pooled
        projected maps -> ``shared_rank`` factors -> every vertex (0: off).
    personal_subjects : list of str
        Subjects ``adapt`` gave their own residual of the positions, widths,
        layer selector and feature weights (:mod:`.personal`); set by the code.
    """

    channels: int = 64
    sampling: Literal["gaussian", "bilinear"] = "gaussian"
    init_width: float = 1.0
    position_spread: float = 0.8
    selector_entropy: float = 0.01
    position_speed: float = 20.0
    dropout: float = 0.1
    norm: bool = True
    max_grid: int = 0
    surround: bool = False
    surround_scale: float = 3.0
    output: Literal["linear", "softplus"] = "linear"
    shared_rank: int = 0
    personal_subjects: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.max_grid < 0 or self.shared_rank < 0:
            raise ConfigError("'max_grid' and 'shared_rank' must be >= 0 (0: off)")
        if not self.surround_scale > 1:
            raise ConfigError(f"'surround_scale' must be > 1; got {self.surround_scale}")
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
    """Learned per-vertex positions and layer selection (see the module docstring).

    The optional stages (``surround_weight``, ``output_gain``, ``shared_in`` and
    ``shared_out``) are ``None`` when their option is off.
    """

    #: every per-vertex tensor ``point`` may have, and its vertex axis (see :attr:`vertex_axes`)
    every_vertex_axis: ClassVar[dict[str, int]] = {
        "positions": 1,
        "log_width": 1,
        "selector": 0,
        "weight": 0,
        "bias": 0,
        "surround_weight": 1,
        "output_gain": 0,
        "shared_out": 0,
    }

    def __init__(
        self,
        feature_shapes: Sequence[Sequence[int]],
        n_vertices: int,
        options: PointOptions,
    ) -> None:
        super().__init__(feature_shapes, n_vertices, options)
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
        # optional stages (None when off); each starts as the identity of the plain readout
        self.surround_weight = _zeros(o.surround, n_layers, n_vertices)
        self.output_gain = _zeros(o.output == "softplus", n_vertices)
        self.shared_in = nn.Linear(o.channels * n_layers, o.shared_rank) if o.shared_rank else None
        self.shared_out = _zeros(o.shared_rank > 0, n_vertices, o.shared_rank)
        self.dropout = nn.Dropout(o.dropout)

    @property
    def vertex_axes(self) -> dict[str, int]:  # type: ignore[override]
        """The per-vertex tensors this readout has (the optional stages that are on)."""
        return {k: a for k, a in self.every_vertex_axis.items() if getattr(self, k) is not None}

    def make_subject_module(self) -> nn.Module:
        return SubjectAffine(self.n_vertices)

    def no_weight_decay(self) -> set[str]:
        """Positions, widths, selector logits and the output stage are not pulled towards zero."""
        return {"positions", "log_width", "selector", "bias", "surround_weight", "output_gain"}

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

    def pooling(self, layer: int, h: int, w: int, scale: torch.Tensor) -> torch.Tensor:
        """Every vertex's reading weights on layer ``layer``'s (h, w) map, times ``scale`` (V,).

        Bilinear sampling is written as the same kind of matrix (tent functions
        of the distance to each cell centre, zero outside the map, as
        ``grid_sample`` with ``align_corners=False``), so every layer of either
        kind is read by one matrix product.

        Returns
        -------
        Tensor of shape (n_vertices, h * w), row-major over the map.
        """
        pos = self.position(layer).to(scale.dtype)  # (V, 2) as (x, y)
        ys = (torch.arange(h, device=pos.device, dtype=pos.dtype) + 0.5) / h * 2 - 1
        xs = (torch.arange(w, device=pos.device, dtype=pos.dtype) + 0.5) / w * 2 - 1
        if self.options.sampling == "bilinear":
            gx = torch.relu(1 - (pos[:, 0:1] - xs[None]).abs() * (w / 2)) * scale[:, None]
            gy = torch.relu(1 - (pos[:, 1:2] - ys[None]).abs() * (h / 2))
            return (gy[:, :, None] * gx[:, None, :]).flatten(1)
        width = self.width(layer).to(pos.dtype)[:, None]
        pool = _gaussian_pool(pos, xs, ys, width, scale)
        if self.surround_weight is not None:  # minus a wider Gaussian: a centre-surround field
            weight = self.surround_weight[layer].to(pos.dtype) * scale
            pool = pool - _gaussian_pool(pos, xs, ys, width * self.options.surround_scale, weight)
        return pool

    def sample(self, fmap: torch.Tensor, layer: int, scale: torch.Tensor) -> torch.Tensor:
        """Read a (B, D, H, W) map at every vertex's position, times ``scale`` (V,).

        Returns
        -------
        Tensor of shape (B, D, n_vertices)
        """
        return fmap.flatten(2) @ self.pooling(layer, *fmap.shape[-2:], scale.to(fmap.dtype)).t()

    @property
    def personal_tensors(self) -> tuple[str, ...]:
        """What an adapted subject may own: positions, widths (Gaussian), selector, weights."""
        widths = ("log_width",) if self.options.sampling == "gaussian" else ()
        return ("positions", *widths, "selector", "weight")

    def personal_step(self, name: str) -> float:
        """An adapted subject's residual of positions and widths is in map units (see above)."""
        return 1 / self.options.position_speed if name in ("positions", "log_width") else 1.0

    def forward(self, features: Sequence[torch.Tensor], subject: torch.Tensor) -> torch.Tensor:
        if (personal := personal_forward(self, features, subject)) is not None:
            return personal  # a batch with an adapted subject's own tuning
        self.check_features(features)
        select = self.layer_weights()
        maps, pools, pooled = [], [], []
        for layer, (x, reduce) in enumerate(zip(features, self.reduce)):
            fmap = reduce(x)
            grid = self.options.max_grid
            if grid and max(fmap.shape[-2:]) > grid:  # coarser map: cheaper reading
                factor = -(-max(fmap.shape[-2:]) // grid)
                fmap = F.avg_pool2d(fmap, factor, ceil_mode=True)
            if self.shared_in is not None:
                pooled.append(fmap.mean((2, 3)))
            maps.append(fmap.flatten(2))
            pools.append(self.pooling(layer, *fmap.shape[-2:], select[:, layer].to(x.dtype)))
        # every layer's positions side by side, read by one (V, positions) x (positions, B*D)
        # product; vertices are its rows and each vertex's channels are summed innermost, so
        # a vertex's prediction does not depend on how many vertices there are (adapt adds
        # some and must leave the others bit-identical)
        fmaps = torch.cat(maps, 2)  # (B, D, positions)
        b, d = fmaps.shape[:2]
        reads = torch.cat(pools, 1) @ fmaps.permute(2, 0, 1).reshape(-1, b * d)  # (V, B*D)
        mixed = self.dropout(reads.view(-1, b, d).transpose(0, 1))  # (B, V, D)
        out = (mixed * self.weight.to(mixed.dtype)).sum(-1) + self.bias
        if self.shared_in is not None and self.shared_out is not None:  # image-global factors
            factors = self.shared_in(torch.cat(pooled, 1))
            out = out + factors @ self.shared_out.to(factors.dtype).t()
        if self.output_gain is not None:
            out = out + self.output_gain.to(out.dtype) * F.softplus(out)
        return affine_per_subject(out, subject, self.subject_modules())


def _zeros(on: bool, *shape: int) -> nn.Parameter | None:
    """A parameter of zeros (an optional stage's identity start), or None when the stage is off."""
    return nn.Parameter(torch.zeros(shape)) if on else None


def _gaussian_pool(
    pos: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, width: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """Normalized Gaussian pooling weights of every vertex, times ``scale``: (V, H*W).

    A 2-D Gaussian is the product of two 1-D ones, and so is its normalization,
    so the (V, H*W) matrix is one outer product of (V, H) and (V, W) softmaxes
    (rather than distances, exponentials and a softmax over every position).
    The scale is folded into the weights: no (B, D, V) multiply afterwards.
    """
    inv = 0.5 / width**2  # (V, 1)
    gx = torch.softmax(-((pos[:, 0:1] - xs[None]) ** 2) * inv, dim=1) * scale[:, None]
    gy = torch.softmax(-((pos[:, 1:2] - ys[None]) ** 2) * inv, dim=1)
    return (gy[:, :, None] * gx[:, None, :]).flatten(1)
