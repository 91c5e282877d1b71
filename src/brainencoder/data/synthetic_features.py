"""Image features of the planted worlds other than ``retino``, and the shapes they draw.

Every function takes one image drawn at :data:`.synthetic_images.GEN_SIZE`
(float, shape (S, S, 3), values in [0, 1]) and returns feature maps on the
:data:`.synthetic_images.GRID` grid, shape (n_features, GRID, GRID); they are
pure functions of the pixels, so the planted response of any image can be
recomputed from the image alone (:mod:`.synthetic_oracle`).
"""

from __future__ import annotations

import numpy as np

from .synthetic_images import GEN_SIZE, GRID

__all__ = ["colour_features", "draw_shape", "edge_features", "shape_features"]

_LUMA = np.array([0.299, 0.587, 0.114])


def _cells(maps: np.ndarray) -> np.ndarray:
    """Average (F, s, s) maps (s a multiple of GRID) onto the GRID x GRID grid."""
    c = maps.shape[-1] // GRID
    return maps.reshape(maps.shape[0], GRID, c, GRID, c).mean(axis=(2, 4))


def _pool2(x: np.ndarray) -> np.ndarray:
    """2 x 2 average pooling of a (s, s) map."""
    s = x.shape[0] // 2
    return x.reshape(s, 2, s, 2).mean(axis=(1, 3))


def _box(x: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Box blur of half-width ``radius`` along ``axis`` (edges repeated)."""
    pad = [(0, 0)] * x.ndim
    pad[axis] = (radius + 1, radius)
    c = np.cumsum(np.pad(x, pad, mode="edge"), axis=axis)
    n = x.shape[axis]
    hi = np.take(c, np.arange(2 * radius + 1, 2 * radius + 1 + n), axis=axis)
    lo = np.take(c, np.arange(n), axis=axis)
    return (hi - lo) / (2 * radius + 1)


def _upsample(x: np.ndarray, size: int) -> np.ndarray:
    f = size // x.shape[0]
    return np.repeat(np.repeat(x, f, axis=0), f, axis=1)


def edge_features(img: np.ndarray) -> np.ndarray:
    """Horizontal and vertical edge energy at 3 scales (1, 2, 4 px), shape (6, GRID, GRID).

    Energies (squared luminance differences) are non-negative: the ``edges``
    world pools them and compresses the sum (a compressive spatial summation).
    """
    lum = img @ _LUMA
    maps = []
    for _ in range(3):
        gx = np.diff(lum, axis=1, append=lum[:, -1:]) ** 2
        gy = np.diff(lum, axis=0, append=lum[-1:, :]) ** 2
        maps += [_upsample(gx, GEN_SIZE), _upsample(gy, GEN_SIZE)]
        lum = _pool2(lum)
    return _cells(np.stack(maps))


def colour_features(img: np.ndarray) -> np.ndarray:
    """Signed red-green and blue-yellow opponency, local contrast, luminance: (4, GRID, GRID)."""
    lum = img @ _LUMA
    rg = img[..., 0] - img[..., 1]
    by = img[..., 2] - 0.5 * (img[..., 0] + img[..., 1])
    mean_sq = _cells(lum[None] ** 2)[0]
    contrast = np.sqrt(np.maximum(mean_sq - _cells(lum[None])[0] ** 2, 0))
    return np.concatenate([_cells(np.stack([rg, by])), contrast[None], _cells(lum[None])])


def shape_features(img: np.ndarray) -> np.ndarray:
    """Large-scale shape detectors, shape (4, GRID, GRID).

    A blob detector (centre 4 pixels minus surround 12 pixels, rectified,
    either polarity), horizontal- and vertical-bar detectors (luminance
    smoothed 10 pixels along the bar, the squared change across it) and
    colour saturation.
    """
    lum = img @ _LUMA
    centre = _box(_box(lum, 4, 0), 4, 1)
    surround = _box(_box(lum, 12, 0), 12, 1)
    blob = np.abs(centre - surround)
    along_x = _box(lum, 10, 1)
    along_y = _box(lum, 10, 0)
    hbar = np.diff(along_x, axis=0, append=along_x[-1:, :]) ** 2
    vbar = np.diff(along_y, axis=1, append=along_y[:, -1:]) ** 2
    saturation = img.max(axis=2) - img.min(axis=2)
    return _cells(np.stack([blob, np.sqrt(hbar), np.sqrt(vbar), saturation]))


def draw_shape(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Paint one large shape (a disc, a ring, a horizontal or a vertical bar) on ``img``.

    Parameters
    ----------
    rng : numpy.random.Generator
    img : ndarray of shape (GEN_SIZE, GEN_SIZE, 3)

    Returns
    -------
    ndarray of shape (GEN_SIZE, GEN_SIZE, 3)
    """
    s = GEN_SIZE
    yy, xx = np.mgrid[0:s, 0:s] / s
    cx, cy = rng.uniform(0.25, 0.75, 2)
    r = rng.uniform(0.12, 0.25)
    kind = rng.integers(4)
    d = np.hypot(xx - cx, yy - cy)
    if kind == 0:
        inside = d < r
    elif kind == 1:
        inside = np.abs(d - r) < 0.25 * r
    elif kind == 2:
        inside = (np.abs(yy - cy) < 0.3 * r) & (np.abs(xx - cx) < 2 * r)
    else:
        inside = (np.abs(xx - cx) < 0.3 * r) & (np.abs(yy - cy) < 2 * r)
    colour = rng.uniform(0, 1, 3)
    return np.where(inside[..., None], colour, img)
