"""The synthetic dataset's images: random scenes, schematic faces and places, and their features."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..util.fileio import atomic_path

__all__ = ["GEN_SIZE", "GRID", "draw_images", "image_features", "save_png", "standardize_features"]

GEN_SIZE = 64  # resolution at which images are drawn and features computed
GRID = 16  # feature grid (cells of GEN_SIZE // GRID pixels)


def _draw_image(rng: np.random.Generator) -> np.ndarray:
    """A random scene at GEN_SIZE: colour gradient, shapes, gratings. float (S, S, 3)."""
    s = GEN_SIZE
    yy, xx = np.mgrid[0:s, 0:s] / s
    img = (
        rng.uniform(0.2, 0.8, 3)
        + rng.uniform(-0.3, 0.3, 3) * xx[..., None]
        + rng.uniform(-0.3, 0.3, 3) * yy[..., None]
    )
    for _ in range(rng.integers(2, 7)):
        cx, cy = rng.uniform(0, 1, 2)
        rx, ry = rng.uniform(0.05, 0.3, 2)
        if rng.random() < 0.5:
            inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
        else:
            inside = (np.abs(xx - cx) < rx) & (np.abs(yy - cy) < ry)
        color = rng.uniform(0, 1, 3)
        if rng.random() < 0.5:
            theta, freq = rng.uniform(0, np.pi), rng.uniform(4, 14)
            grating = 0.5 + 0.5 * np.sin(
                2 * np.pi * freq * (np.cos(theta) * xx + np.sin(theta) * yy)
            )
            layer = color * grating[..., None]
        else:
            layer = np.broadcast_to(color, img.shape)
        img = np.where(inside[..., None], layer, img)
    return np.clip(img, 0, 1)


def _draw_face(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """A schematic face: a skin-toned oval with two dark eyes and a mouth."""
    s = GEN_SIZE
    yy, xx = np.mgrid[0:s, 0:s] / s
    cx, cy, r = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65), rng.uniform(0.2, 0.3)
    face = ((xx - cx) / (0.8 * r)) ** 2 + ((yy - cy) / r) ** 2 < 1
    img = np.where(face[..., None], np.array([0.93, 0.76, 0.62]) * rng.uniform(0.8, 1.1), img)
    for dx in (-0.35, 0.35):
        eye = (xx - cx - dx * r) ** 2 + (yy - cy + 0.25 * r) ** 2 < (0.12 * r) ** 2
        img = np.where(eye[..., None], 0.05, img)
    mouth = (np.abs(yy - cy - 0.45 * r) < 0.05 * r) & (np.abs(xx - cx) < 0.35 * r)
    return np.clip(np.where(mouth[..., None], np.array([0.6, 0.1, 0.1]), img), 0, 1)


def _draw_place(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """A schematic place: sky over ground at a horizon, with vertical buildings."""
    s = GEN_SIZE
    yy, xx = np.mgrid[0:s, 0:s] / s
    horizon = rng.uniform(0.4, 0.6)
    sky = np.array([0.55, 0.75, 0.95]) + 0.2 * (yy[..., None] - horizon)
    ground = np.array([0.45, 0.4, 0.3]) * rng.uniform(0.8, 1.2)
    out = np.where((yy < horizon)[..., None], sky, ground)
    for _ in range(rng.integers(3, 7)):
        left, width = rng.uniform(0, 0.9), rng.uniform(0.05, 0.15)
        top = rng.uniform(0.1, horizon)
        block = (xx > left) & (xx < left + width) & (yy > top) & (yy < horizon)
        out = np.where(block[..., None], rng.uniform(0.2, 0.6, 3), out)
    return np.clip(0.85 * out + 0.15 * img, 0, 1)


def image_features(img: np.ndarray) -> np.ndarray:
    """The ``retino`` world's phase-invariant features on a GRID x GRID grid.

    Parameters
    ----------
    img : ndarray of shape (GEN_SIZE, GEN_SIZE, 3)

    Returns
    -------
    ndarray of shape (5, GRID, GRID)
        Gradient energy (two orientations), colour-opponent contrast (two),
        luminance.
    """
    lum = img @ np.array([0.299, 0.587, 0.114])
    gx = np.abs(np.diff(lum, axis=1, append=lum[:, -1:]))
    gy = np.abs(np.diff(lum, axis=0, append=lum[-1:, :]))
    rg = np.abs(img[..., 0] - img[..., 1])
    by = np.abs(img[..., 2] - 0.5 * (img[..., 0] + img[..., 1]))
    maps = np.stack([np.sqrt(gx), np.sqrt(gy), rg, by, lum])
    c = GEN_SIZE // GRID
    return maps.reshape(5, GRID, c, GRID, c).mean(axis=(2, 4))


def draw_images(
    rng: np.random.Generator, n_pool: int, categories: bool, seed: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """The pool's images and their category (0 none, 1 face, 2 place).

    Parameters
    ----------
    rng : numpy.random.Generator
        Draws the scenes.
    n_pool : int
        Images in the pool.
    categories : bool
        Plant faces and places (drawn from their own stream, seeded by ``seed``,
        so a dataset without categories stays byte-identical).
    seed : int
        The dataset's seed.

    Returns
    -------
    images : list of ndarray of shape (GEN_SIZE, GEN_SIZE, 3)
    category : ndarray of int64, shape (n_pool,)
    """
    images = [_draw_image(rng) for _ in range(n_pool)]
    category = np.zeros(n_pool, dtype=np.int64)
    if categories:  # own stream: the default dataset stays byte-identical
        crng = np.random.default_rng([seed, 7919])
        category = crng.choice(3, size=n_pool, p=[0.5, 0.25, 0.25])
        for i in np.flatnonzero(category == 1):
            images[i] = _draw_face(crng, images[i])
        for i in np.flatnonzero(category == 2):
            images[i] = _draw_place(crng, images[i])
    return images, category


def standardize_features(
    feats: np.ndarray, centred: bool, stats: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Features standardized per feature with the pool's statistics.

    Parameters
    ----------
    feats : ndarray of shape (n_images, n_features, grid, grid)
    centred : bool
        Subtract the mean and divide by the sd; otherwise only divide by the
        mean (non-negative features stay non-negative).
    stats : (ndarray, ndarray), optional
        (mean, sd), each of shape (1, n_features, 1, 1); computed from ``feats``
        when absent (the pool's own features).

    Returns
    -------
    feats : ndarray of shape (n_images, n_features, grid, grid)
    stats : (ndarray, ndarray)
    """
    if stats is None:
        stats = (
            feats.mean(axis=(0, 2, 3), keepdims=True),
            feats.std(axis=(0, 2, 3), keepdims=True),
        )
    mean, sd = stats
    return ((feats - mean) / sd if centred else feats / mean), stats


def save_png(path: Path, img: np.ndarray, size: int) -> None:
    """Write an image drawn at GEN_SIZE as a PNG of ``size`` x ``size`` pixels.

    Parameters
    ----------
    path : Path
        Written atomically.
    img : ndarray of shape (GEN_SIZE, GEN_SIZE, 3)
        Values in [0, 1].
    size : int
        Side of the PNG (bicubic resampling when it differs from GEN_SIZE).
    """
    from PIL import Image

    pil = Image.fromarray((img * 255).round().astype(np.uint8), mode="RGB")
    if size != GEN_SIZE:
        pil = pil.resize((size, size), Image.Resampling.BICUBIC)
    with atomic_path(path, suffix=".png") as tmp:
        pil.save(tmp, format="PNG", compress_level=1)
