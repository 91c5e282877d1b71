"""``roi_query``: one learned query per brain region, read out through attention.

After the second place of Algonauts 2023 (Adeli et al. 2023): each trunk
layer's tokens (every position of the map, prefix tokens included when the
trunk gives them) are projected to ``dim`` channels with a learned position
and layer embedding; one learned query per region (the challenge's ROIs, in
the priority order of ``roi_groups``; vertices outside every ROI share one
more query) attends to all of them through a small pre-norm transformer
decoder (queries attend to each other, then to the tokens); every vertex maps
its region's output linearly::

    y[b, v] = w[v] . out[b, region(v)] + bias[v]

Each subject owns a per-vertex gain and offset on top. The region of every
vertex is a buffer of the model, so a model file needs no label files to
predict. Parameters at the challenge's shape (6 layers of 768 x 257 tokens,
39,548 vertices, 8 subjects, 24 regions, dim 128, 1 decoder layer): 6.73 M;
the per-vertex maps cost O(B x R x V) for R regions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ...core.regions import DEFAULT_ROI_GROUPS, RegionLabels
from ...util.errors import ConfigError
from .base import Readout, register_readout
from .personal import personal_forward
from .subject_layers import SubjectAffine, affine_per_subject

__all__ = ["RoiQueryOptions", "RoiQueryReadout"]


@dataclass
class RoiQueryOptions:
    """Options of ``roi_query``.

    Attributes
    ----------
    dim : int
        Width of tokens, queries and region outputs.
    queries_per_region : int
        Queries of each region; a vertex maps the concatenation of its region's
        outputs (``queries_per_region * dim`` values).
    heads : int
        Attention heads (must divide ``dim``).
    depth : int
        Decoder layers (1 to 64).
    dropout : float
        Dropout inside the decoder and on the region outputs.
    roi_groups : list of str
        ROI groups that define the regions, most specific first.
    region_names : list of str
        Region names, set by the code from the data's label files (query 0 is
        "outside every ROI", query k is ``region_names[k - 1]``).
    personal_subjects : list of str
        Subjects ``adapt`` gave their own residual of every vertex's map of
        its region's outputs (:mod:`.personal`); set by the code.
    """

    dim: int = 128
    queries_per_region: int = 1
    heads: int = 4
    depth: int = 1
    dropout: float = 0.1
    roi_groups: list[str] = field(default_factory=lambda: list(DEFAULT_ROI_GROUPS))
    region_names: list[str] = field(default_factory=list)
    personal_subjects: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.dim < 1 or self.heads < 1 or self.dim % self.heads:
            raise ConfigError(
                f"'dim' ({self.dim}) must be a positive multiple of 'heads' ({self.heads})"
            )
        if self.queries_per_region < 1:
            raise ConfigError(f"'queries_per_region' must be >= 1; got {self.queries_per_region}")
        if not 1 <= self.depth <= 64:  # layers are deep copies: a huge depth is not built
            raise ConfigError(f"'depth' must be in [1, 64]; got {self.depth}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"'dropout' must be in [0, 1); got {self.dropout}")
        if not self.roi_groups:
            raise ConfigError("'roi_groups' must name at least one ROI group")


@register_readout("roi_query", RoiQueryOptions)
class RoiQueryReadout(Readout):
    """Region queries over the trunk's tokens (see the module docstring).

    ``regions`` (the region of every group vertex) is required to build a new
    readout; a readout rebuilt from a model file takes its labels from the file.
    """

    needs = frozenset({"regions"})
    vertex_axes: ClassVar[dict[str, int]] = {"region": 0, "weight": 0, "bias": 0}
    #: what an adapted subject may own a residual of: every vertex's map (its "query")
    personal_tensors: ClassVar[tuple[str, ...]] = ("weight",)

    def __init__(
        self,
        feature_shapes: Sequence[Sequence[int]],
        n_vertices: int,
        options: RoiQueryOptions,
        regions: RegionLabels | None = None,
    ) -> None:
        super().__init__(feature_shapes, n_vertices, options)
        o = options
        if regions is not None:
            if regions.labels.shape != (n_vertices,):
                raise ConfigError(
                    f"region labels of shape {regions.labels.shape}, expected ({n_vertices},)"
                )
            o.region_names = list(regions.names)
            labels = torch.as_tensor(regions.labels, dtype=torch.long)
        elif o.region_names:
            labels = torch.zeros(n_vertices, dtype=torch.long)  # filled from a model file
        else:
            raise ConfigError(
                "the roi_query readout needs the data's ROI labels (ReadoutContext.regions)"
            )
        self.register_buffer("region", labels)
        self.register_load_state_dict_post_hook(_check_regions)
        n_queries = len(o.region_names) + 1
        self.embed = nn.ModuleList(
            nn.Sequential(nn.Linear(shape[0], o.dim), nn.LayerNorm(o.dim))
            for shape in self.feature_shapes
        )
        self.position = nn.ParameterList(
            nn.Parameter(torch.randn(math.prod(shape[1:]), o.dim) * 0.02)
            for shape in self.feature_shapes
        )
        self.layer_embedding = nn.Parameter(torch.randn(len(self.feature_shapes), o.dim) * 0.02)
        self.queries = nn.Parameter(torch.randn(n_queries * o.queries_per_region, o.dim) * 0.02)
        layer = nn.TransformerDecoderLayer(
            o.dim, o.heads, 2 * o.dim, o.dropout, batch_first=True, norm_first=True
        )
        self.decoder = nn.TransformerDecoder(layer, o.depth, norm=nn.LayerNorm(o.dim))
        self.dropout = nn.Dropout(o.dropout)
        width = o.dim * o.queries_per_region
        self.weight = nn.Parameter(torch.zeros(n_vertices, width))  # starts at the mean
        self.bias = nn.Parameter(torch.zeros(n_vertices))

    def make_subject_module(self) -> nn.Module:
        return SubjectAffine(self.n_vertices)

    def new_vertex_value(self, name: str, old: torch.Tensor) -> torch.Tensor | None:
        """Vertices added for a new subject read the query of no region (the last)."""
        if name == "region":
            return old.new_full((1,), len(self.options.region_names))
        return None

    def no_weight_decay(self) -> set[str]:
        """Embeddings, queries and biases are not decayed (as timm's ViTs)."""
        return {"layer_embedding", "queries", "bias"} | {
            f"position.{i}" for i in range(len(self.position))
        }

    def initialize(self, mean_response: torch.Tensor) -> None:
        """Start the prediction near the training mean."""
        with torch.no_grad():
            self.bias.copy_(mean_response)

    def tokens(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Every layer's positions as tokens, (B, sum of positions, dim)."""
        parts = []
        for index, (x, embed) in enumerate(zip(features, self.embed)):
            t = embed(x.flatten(2).transpose(1, 2))  # (B, P, dim)
            parts.append(t + self.position[index] + self.layer_embedding[index])
        return torch.cat(parts, 1)

    def region_outputs(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Each region's outputs, concatenated: (B, n_regions + 1, queries_per_region * dim)."""
        self.check_features(features)
        memory = self.tokens(features)
        queries = self.queries.to(memory.dtype).expand(memory.shape[0], -1, -1)
        out = self.dropout(self.decoder(queries, memory))
        return out.reshape(out.shape[0], -1, self.weight.shape[1])

    def forward(self, features: Sequence[torch.Tensor], subject: torch.Tensor) -> torch.Tensor:
        if (personal := personal_forward(self, features, subject)) is not None:
            return personal  # a batch with an adapted subject's own maps
        out = self.region_outputs(features)
        every = torch.einsum("brd,vd->brv", out, self.weight.to(out.dtype))  # (B, R, V)
        index = self.region[None, None, :].expand(out.shape[0], 1, -1)
        pred = every.gather(1, index)[:, 0] + self.bias
        return affine_per_subject(pred, subject, self.subject_modules())


def _check_regions(module: RoiQueryReadout, incompatible) -> None:
    """Region labels loaded from a file must name this readout's queries."""
    region = module.region
    if region.numel() and (region.min() < 0 or region.max() > len(module.options.region_names)):
        raise ConfigError(
            f"the model's region labels run from {int(region.min())} to {int(region.max())}, "
            f"but it has {len(module.options.region_names)} regions (+1); the file is damaged"
        )
