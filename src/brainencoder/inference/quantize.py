"""Storage of cached features: int8 quantization, value checks and size estimates."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..models.encoder import Encoder
from ..util.errors import StoreError

__all__ = ["bytes_per_view", "check_features", "estimate_cache_bytes", "quantize_int8"]

_FLOAT16_MAX = float(torch.finfo(torch.float16).max)


def quantize_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one float32 scale per (sample, channel).

    Parameters
    ----------
    x : Tensor of shape (B, C, *positions)

    Returns
    -------
    q : int8 Tensor of shape (B, C, *positions)
    scale : float32 Tensor of shape (B, C)
        ``x`` is about ``q * scale`` (error at most half a step of its channel).
    """
    flat = x.float().flatten(2)
    scale = flat.abs().amax(2) / 127.0
    step = scale.clamp_min(torch.finfo(torch.float32).tiny)[..., None]
    q = torch.round(flat / step).clamp_(-127, 127).to(torch.int8)
    return q.view(x.shape), scale


def check_features(feats: list[torch.Tensor], dtype: str, where: str) -> None:
    """Refuse features a cache would store wrongly: NaN/inf, or beyond float16's range.

    Parameters
    ----------
    feats : list of Tensor of shape (B, C, *positions)
    dtype : {"float16", "int8"}
        The cache's storage; int8 keeps float32 scales, so any finite value fits.
    where : str
        Which images, for the message.

    Raises
    ------
    StoreError
        If a layer's features are not finite, or exceed float16's range in a
        float16 cache.
    """
    for i, f in enumerate(feats):
        peak = f.detach().abs().amax()
        if not torch.isfinite(peak):
            raise StoreError(
                f"the trunk's layer {i} gave NaN or inf features for {where}; nothing of "
                "them was cached: check the trunk's weights file (and amp settings)"
            )
        if dtype == "float16" and float(peak) > _FLOAT16_MAX:
            raise StoreError(
                f"the trunk's layer {i} gave features up to {float(peak):.3g} for {where}, "
                f"beyond float16's {_FLOAT16_MAX:.0f}: a float16 cache would hold inf; "
                "set cache_dtype=int8 (float32 scales) or cache_features=false"
            )


def estimate_cache_bytes(
    model: Encoder, n_images: int, n_views: int, dtype: str = "float16"
) -> int:
    """Bytes a cache of ``n_images`` x ``n_views`` takes in ``dtype`` ("float16" or "int8")."""
    return bytes_per_view(model.feature_shapes, dtype) * n_images * n_views


def bytes_per_view(shapes: Sequence[Sequence[int]], dtype: str) -> int:
    """Bytes one view of one image takes in a cache.

    Parameters
    ----------
    shapes : sequence of (C, *positions)
        Feature shape of every cached layer.
    dtype : {"float16", "int8"}
        int8 adds a float32 scale per channel.

    Returns
    -------
    int
    """
    values = sum(int(np.prod(s)) for s in shapes)
    if dtype == "int8":
        return values + 4 * sum(int(s[0]) for s in shapes)  # + a float32 scale per channel
    return 2 * values
