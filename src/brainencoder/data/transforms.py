"""Batched image transforms on tensors: resize and random-resized-crop.

:func:`resize` is the one resize of the package: training, the feature cache,
validation, ``Encoder.prepare_images`` (every prediction) and the ridge
extractor all call it, so an image meets the model the same way everywhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["random_resized_crop", "resize", "to_float"]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """Channels-last uint8 images to channels-first floats in [0, 1].

    Parameters
    ----------
    images : uint8 Tensor of shape (B, H, W, 3)

    Returns
    -------
    float32 Tensor of shape (B, 3, H, W)
    """
    return images.permute(0, 3, 1, 2).float().div_(255)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize images to ``size`` x ``size`` (bilinear, antialiased).

    Parameters
    ----------
    images : Tensor
        uint8 of shape (B, H, W, 3), or float of shape (B, 3, H, W) in [0, 1].
    size : int

    Returns
    -------
    float Tensor of shape (B, 3, size, size) in [0, 1]
        A float input already of that size is returned as it is.
    """
    x = to_float(images) if images.dtype == torch.uint8 else images
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def random_resized_crop(
    images: torch.Tensor, size: int, scale: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """Square crops of random area fraction and position, resized to ``size``.

    Parameters
    ----------
    images : uint8 Tensor of shape (B, H, W, 3)
    size : int
    scale : (float, float)
        Range of the crop's area as a fraction of the image.
    generator : torch.Generator
        Source of randomness (CPU); the crops are a function of its state.

    Returns
    -------
    float Tensor of shape (B, 3, size, size) in [0, 1]
    """
    from torchvision.ops import roi_align

    x = to_float(images)
    b, _, h, w = x.shape
    if scale[0] >= 1.0:
        return resize(images, size)
    area = torch.empty(b).uniform_(scale[0], scale[1], generator=generator)
    side = area.sqrt()
    x0 = torch.rand(b, generator=generator) * (1 - side) * w
    y0 = torch.rand(b, generator=generator) * (1 - side) * h
    boxes = torch.stack(
        [torch.arange(b, dtype=torch.float32), x0, y0, x0 + side * w, y0 + side * h], dim=1
    ).to(x.device)
    return roi_align(
        x, boxes, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True
    )
