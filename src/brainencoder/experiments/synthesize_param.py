"""Images made by gradient ascent: a decorrelated Fourier parametrization and its priors.

An image is not optimised pixel by pixel (that finds high-frequency patterns
that fool one network and no other): its pixels are the inverse real FFT of a
learned spectrum whose amplitudes are scaled by ``1 / frequency ** decay``
(``decay`` 1 is natural images' fall-off, so every frequency starts on an equal
footing and low frequencies move first; the default 1.5 favours smoother
images, which other models than the makers also respond to), in a decorrelated
colour space (the square root of natural images' colour covariance), squashed
into [0, 1] by a sigmoid (after Olah et al. 2017, "Feature Visualization", and
the Lucid library). Each step sees the image jittered by a few pixels (a random
translation), optionally blurred, with a total-variation penalty: priors that
keep what is found robust, so that models that did not make an image also
respond to it.

:func:`ascend` runs the optimisation for any differentiable objective, so it
knows nothing of encoders or regions (:mod:`.synthesize` builds those).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .synthesize_options import AscentOptions

__all__ = ["AscentOptions", "FourierImages", "ascend", "total_variation"]

# square root of the colour covariance of natural images (ImageNet), as in Lucid:
# its columns are the decorrelated colour directions, scaled below so the largest has norm 1
_COLOR_SQRT = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))


class FourierImages(torch.nn.Module):
    """``n`` images of ``size`` x ``size`` pixels from a learned, decorrelated spectrum.

    Parameters
    ----------
    n : int
        Number of images (each its own start).
    size : int
        Side in pixels.
    generator : torch.Generator
        Seeds the starting spectra (small random values: a grey, faintly textured start).
    decay : float, default=1.0
        Amplitudes scale as ``1 / max(frequency, 1 / size) ** decay``.
    """

    def __init__(self, n: int, size: int, generator: torch.Generator, decay: float = 1.0) -> None:
        super().__init__()
        fy = torch.fft.fftfreq(size)[:, None]
        fx = torch.fft.rfftfreq(size)[None, :]
        freq = torch.sqrt(fx**2 + fy**2).clamp_min(1.0 / size)
        self.register_buffer("scale", (1.0 / freq**decay)[None, None], persistent=False)
        color = torch.tensor(_COLOR_SQRT)
        self.register_buffer("color", color / color.norm(dim=0).max(), persistent=False)
        shape = (n, 3, size, size // 2 + 1, 2)
        self.spectrum = torch.nn.Parameter(0.01 * torch.randn(shape, generator=generator))
        self.size = size

    def forward(self) -> torch.Tensor:
        """The images, float (n, 3, size, size) in [0, 1]."""
        spec = torch.view_as_complex(self.spectrum) * self.scale
        decorrelated = torch.fft.irfft2(spec, s=(self.size, self.size), norm="ortho") / 4.0
        rgb = torch.einsum("ij,njhw->nihw", self.color, decorrelated)
        return torch.sigmoid(rgb)


def _jitter(x: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Every image translated by its own random offset of up to ``pixels`` (reflected edges)."""
    if pixels <= 0:
        return x
    size = x.shape[-1]
    padded = F.pad(x, (pixels,) * 4, mode="reflect")
    shifts = torch.randint(0, 2 * pixels + 1, (x.shape[0], 2), generator=generator)
    return torch.stack(
        [padded[i, :, dy : dy + size, dx : dx + size] for i, (dy, dx) in enumerate(shifts.tolist())]
    )


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, 3, H, W) images; ``sigma`` 0: unchanged."""
    if sigma <= 0:
        return x
    radius = max(1, round(2.5 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k, groups=3)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k.transpose(2, 3), groups=3)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels of each image, shape (B,)."""
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(1, 2, 3))
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean(dim=(1, 2, 3))
    return dx + dy


def ascend(
    objective: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    size: int,
    options: AscentOptions,
) -> torch.Tensor:
    """Images that maximise ``objective``, by Adam on a :class:`FourierImages` spectrum.

    Parameters
    ----------
    objective : callable
        Maps images float (n, 3, size, size) in [0, 1] to one value per image,
        shape (n,), differentiable in the pixels (it resizes them to what its
        models see); each image is pushed to raise its own value.
    n : int
        Images (starts), each from its own seeded random spectrum.
    size : int
        Side of the images made (the models' stored image size).
    options : AscentOptions

    Returns
    -------
    Tensor of float32, shape (n, 3, size, size)
        In [0, 1], detached.
    """
    generator = torch.Generator().manual_seed(options.seed)
    images = FourierImages(n, size, generator, options.decay)
    optimizer = torch.optim.Adam(images.parameters(), lr=options.lr)
    for _ in range(options.steps):
        optimizer.zero_grad(set_to_none=True)
        x = images()
        seen = _blur(_jitter(x, options.jitter, generator), options.blur)
        value = objective(seen) - options.tv * total_variation(x) * size
        (-value.sum()).backward()
        optimizer.step()
    with torch.no_grad():
        return images().float()
