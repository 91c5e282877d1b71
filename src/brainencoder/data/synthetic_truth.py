"""The planted ground truth of the synthetic dataset: cortex, retinotopy, ROIs, noise and responses.

See :mod:`.synthetic` for the planted model; images and their features are in
:mod:`.synthetic_images`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

__all__ = [
    "FACE_PATCH",
    "PLACE_PATCH",
    "Cortex",
    "category_drive",
    "make_cortex",
    "noise_ceiling",
    "roi_labels",
    "smooth_field",
    "vertex_patch",
]

FACE_PATCH = np.array([0.45, -0.55])  # cortical position of the face patch (uv)
PLACE_PATCH = np.array([-0.45, -0.5])  # cortical position of the place patch (uv)


# ----------------------------------------------------------------------------- cortex


def _sphere(hemi: str) -> np.ndarray:
    from nilearn.datasets import load_fsaverage

    part = "left" if hemi == "lh" else "right"
    coords = np.asarray(load_fsaverage("fsaverage5")["sphere"].parts[part].coordinates)
    return coords / np.linalg.norm(coords, axis=1, keepdims=True)


@dataclass
class Cortex:
    """The planted cortex of one hemisphere.

    Attributes
    ----------
    vertices : ndarray of int64, shape (n,)
        fsaverage indices, sorted.
    uv : ndarray of shape (n, 2)
        Tangent-plane coordinates around the pole, in [-1, 1].
    ecc : ndarray of shape (n,)
        Normalized distance from the pole, in [0, 1].
    """

    vertices: np.ndarray
    uv: np.ndarray
    ecc: np.ndarray


def make_cortex(hemi: str, n_vertices: int) -> Cortex:
    """The ``n_vertices`` fsaverage5 vertices of ``hemi`` nearest its occipital pole.

    Parameters
    ----------
    hemi : {"lh", "rh"}
    n_vertices : int

    Returns
    -------
    Cortex
    """
    xyz = _sphere(hemi)
    pole = np.array([0.0, -1.0, -0.25])
    pole /= np.linalg.norm(pole)
    angle = np.arccos(np.clip(xyz @ pole, -1, 1))
    chosen = np.sort(np.argsort(angle, kind="stable")[:n_vertices])
    e1 = np.array([1.0, 0.0, 0.0])
    e2 = np.cross(pole, e1)
    pts = xyz[chosen]
    uv = np.stack([pts @ e1, pts @ e2], axis=1)
    uv /= np.abs(uv).max()
    ecc = angle[chosen] / angle[chosen].max()
    return Cortex(chosen.astype(np.int64), uv, ecc)


def smooth_field(rng: np.random.Generator, uv: np.ndarray, n_out: int, freq: float) -> np.ndarray:
    """Random smooth functions of cortical position.

    Parameters
    ----------
    rng : numpy.random.Generator
    uv : ndarray of shape (n_vertices, 2)
    n_out : int
    freq : float
        Spatial frequency (radians per unit of ``uv``) of the cosines summed.

    Returns
    -------
    ndarray of shape (n_vertices, n_out)
        Each column has variance about 0.5 over random draws.
    """
    omega = rng.normal(scale=freq, size=(2, 8))
    phase = rng.uniform(0, 2 * np.pi, size=8)
    basis = np.cos(uv @ omega + phase)
    return basis @ rng.normal(size=(8, n_out)) / np.sqrt(8)


# ----------------------------------------------------------------------------- responses


def category_drive(cx: Cortex, cat: np.ndarray) -> np.ndarray:
    """Extra response of the face and place patches to their category.

    Parameters
    ----------
    cx : Cortex
    cat : ndarray of int, shape (n_images,)
        0 none, 1 face, 2 place.

    Returns
    -------
    ndarray of shape (n_images, n_vertices)
    """
    d_face = np.linalg.norm(cx.uv - FACE_PATCH, axis=1)
    d_place = np.linalg.norm(cx.uv - PLACE_PATCH, axis=1)
    return 3.0 * (
        (cat == 1)[:, None] * np.exp(-((d_face / 0.15) ** 2))[None]
        + (cat == 2)[:, None] * np.exp(-((d_place / 0.15) ** 2))[None]
    )


def noise_ceiling(
    cortex: Cortex, face_patch: np.ndarray, place_patch: np.ndarray | None = None
) -> np.ndarray:
    """The planted noise ceiling (fraction of variance) of every vertex.

    Parameters
    ----------
    cortex : Cortex
    face_patch : ndarray of shape (2,)
        Cortical position (uv) of the face patch, where the ceiling is high.
    place_patch : ndarray of shape (2,), optional
        Cortical position of the place patch, likewise.

    Returns
    -------
    ndarray of shape (n_vertices,)
        In [0.02, 0.9].
    """
    d_face = np.linalg.norm(cortex.uv - face_patch, axis=1)
    nc = 0.05 + 0.75 * np.exp(-((cortex.ecc / 0.55) ** 2)) + 0.5 * np.exp(-((d_face / 0.15) ** 2))
    if place_patch is not None:
        nc = nc + 0.5 * np.exp(-((np.linalg.norm(cortex.uv - place_patch, axis=1) / 0.15) ** 2))
    return np.clip(nc, 0.02, 0.9)


def roi_labels(
    cortex: Cortex, face_patch: np.ndarray, place_patch: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Every vertex's label in each ROI group.

    Parameters
    ----------
    cortex : Cortex
    face_patch : ndarray of shape (2,)
        Cortical position (uv) of the face patch (``floc-faces``).
    place_patch : ndarray of shape (2,), optional
        Cortical position of the place patch; adds a ``floc-places`` group.

    Returns
    -------
    dict of str to ndarray of int64, shape (n_vertices,)
        Labels index the group's names (0 is "Unknown").
    """
    u, v, e = cortex.uv[:, 0], cortex.uv[:, 1], cortex.ecc
    ventral = v < 0
    visual = np.zeros(e.size, dtype=np.int64)
    for k, limit in enumerate((0.3, 0.45, 0.6)):
        band = (visual == 0) & (e < limit)
        visual[band] = np.where(ventral[band], 2 * k + 1, 2 * k + 2)
    visual[(visual == 0) & (e < 0.7) & ventral] = 7
    faces = np.zeros(e.size, dtype=np.int64)
    d_face = np.linalg.norm(cortex.uv - face_patch, axis=1)
    faces[d_face < 0.12] = 2
    faces[(d_face >= 0.12) & (d_face < 0.2) & (u < face_patch[0])] = 1
    streams = np.where(e < 0.45, 1, np.where(e < 0.7, 3, np.where(ventral, 5, 6)))
    streams[(e >= 0.7) & (v > 0.5)] = 7
    labels = {"prf-visualrois": visual, "floc-faces": faces, "streams": streams}
    if place_patch is not None:
        places = np.zeros(e.size, dtype=np.int64)
        d_place = np.linalg.norm(cortex.uv - place_patch, axis=1)
        places[d_place < 0.12] = 2  # PPA
        places[(d_place >= 0.12) & (d_place < 0.2) & (v > place_patch[1])] = 1  # OPA
        labels["floc-places"] = places
    return labels


def vertex_patch(cx: Cortex, n: int, seed: int, hemi: str, what: str) -> np.ndarray:
    """A seeded compact patch of ``n`` vertices.

    Parameters
    ----------
    cx : Cortex
    n : int
        Vertices in the patch.
    seed : int
    hemi : {"lh", "rh"}
    what : str
        Names the patch; with ``seed`` and ``hemi`` it seeds the patch's centre.

    Returns
    -------
    ndarray of bool, shape (n_vertices,)
    """
    rng = np.random.default_rng([seed, zlib.crc32(f"{hemi} {what}".encode())])
    center = rng.integers(cx.vertices.size)
    dist = np.linalg.norm(cx.uv - cx.uv[center], axis=1)
    patch = np.zeros(cx.vertices.size, dtype=bool)
    patch[np.argsort(dist, kind="stable")[:n]] = True
    return patch
