"""A synthetic dataset in the exact challenge layout, with a planted ground truth.

The planted model is a small "visual cortex":

* Vertices are fsaverage5 vertices (the first 10,242 fsaverage indices, so the
  data live in true fsaverage index space and plot exactly on nilearn's
  offline fsaverage5 meshes) nearest to the occipital pole of each hemisphere.
* Each vertex has a receptive field (a Gaussian on the image) whose centre is
  a smooth function of its position on the sphere (a retinotopic map) and
  whose size grows with distance from the pole.
* Image features are phase-invariant and therefore nonlinear in the pixels:
  local gradient energy in two orientations, absolute colour-opponent
  contrast and luminance. Each vertex weights them with a preference that
  varies smoothly over the cortex, pooled over its receptive field, followed
  by a soft rectification.
* Subjects share the map, with small per-subject jitter of receptive fields
  and gains; one subject misses a patch of vertices.
* Noise is vertex-specific: the noise ceiling (fraction of variance of a
  measurement explained by the signal) is high near the pole and in a
  "face patch" and low elsewhere, so a good model's score map is localized.

The truth (noise ceilings as fractions, held-back noisy test responses and
their noise-free signal) is written under ``OUT/truth/subjXX/``.
"""

from __future__ import annotations

import logging
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import BrainEncoderError
from ..fileio import atomic_path, save_mapping, save_npy_atomic, write_json_atomic
from ..space import ico_vertices
from .layout import HEMIS

__all__ = ["SyntheticConfig", "make_synthetic"]

logger = logging.getLogger(__name__)

_GEN_SIZE = 64  # resolution at which images are drawn and features computed
_GRID = 16  # feature grid (cells of _GEN_SIZE // _GRID pixels)
_FACE_PATCH = np.array([0.45, -0.55])  # cortical position of the face patch (uv)
_PLACE_PATCH = np.array([-0.45, -0.5])  # cortical position of the place patch (uv)

ROI_GROUPS = {
    "prf-visualrois": ["Unknown", "V1v", "V1d", "V2v", "V2d", "V3v", "V3d", "hV4"],
    "floc-faces": ["Unknown", "OFA", "FFA-1", "FFA-2", "mTL-faces", "aTL-faces"],
    "streams": [
        "Unknown",
        "early",
        "midventral",
        "midlateral",
        "midparietal",
        "ventral",
        "lateral",
        "parietal",
    ],
}


@dataclass
class SyntheticConfig:
    """Sizes and noise of a synthetic dataset.

    Attributes
    ----------
    n_subjects : int, default=3
    n_train : int, default=300
        Training images of the first subject; subject ``k`` (0-based) gets
        ``n_train - k * max(1, n_train // 12)``, so counts differ as in the challenge.
    n_test : int, default=50
        Test images of the first subject (subject ``k``: ``n_test - k * max(1, n_test // 10)``).
    n_vertices : int, default=1200
        Group vertices per hemisphere (at most 10,242).
    image_size : int, default=425
        Side of the square PNG images (the challenge's is 425).
    missing_fraction : float, default=0.04
        Fraction of each hemisphere's vertices the last subject lacks.
    shared_fraction : float, default=0.3
        Fraction of images every subject sees (like NSD's shared 1,000).
    n_fsaverage : int, default=ico_vertices(7)
        Length of the fsaverage-space masks (fsaverage, icosahedral order 7).
    categories : bool, default=False
        Plant image categories: a quarter of the images show a schematic face,
        a quarter a schematic place (horizon and buildings); a face patch
        (the ``floc-faces`` ROIs) responds to faces and a place patch (a
        ``floc-places`` group: OPA, PPA) to places, on top of the
        retinotopic model, so in-silico rankings can be checked against truth
        (``truth/categories.json`` lists each image's category).
    held_out : int, default=0
        Extra subjects (named after the others) meant to be kept out of group
        training, for ``adapt``: same planted truth family, their own images,
        noise and jitter, and their own vertex subset: they have a patch
        (``missing_fraction`` of each hemisphere) that none of the group
        subjects has, and lack another. ``truth/synthetic.json`` lists them.
    seed : int, default=0
    """

    n_subjects: int = 3
    n_train: int = 300
    n_test: int = 50
    n_vertices: int = 1200
    image_size: int = 425
    missing_fraction: float = 0.04
    shared_fraction: float = 0.3
    n_fsaverage: int = ico_vertices(7)
    categories: bool = False
    held_out: int = 0
    seed: int = 0

    @property
    def n_total(self) -> int:
        """Group subjects plus held-out subjects."""
        return self.n_subjects + self.held_out

    def held_out_names(self) -> list[str]:
        """Names of the held-out subjects (after the group subjects)."""
        return [f"subj{k + 1:02d}" for k in range(self.n_subjects, self.n_total)]

    def train_counts(self) -> list[int]:
        """Training images per subject (held-out subjects repeat the first counts)."""
        step = max(1, self.n_train // 12)
        group = [self.n_train - k * step for k in range(self.n_subjects)]
        return group + [group[k % len(group)] for k in range(self.held_out)]

    def test_counts(self) -> list[int]:
        """Test images per subject."""
        step = max(1, self.n_test // 10)
        group = [self.n_test - k * step for k in range(self.n_subjects)]
        return group + [group[k % len(group)] for k in range(self.held_out)]

    def validate(self) -> None:
        checks = [
            (1 <= self.n_subjects <= 99, "'n_subjects' must be in [1, 99]"),
            (
                0 <= self.held_out <= 99 - self.n_subjects,
                "'held_out' must be in [0, 99 - n_subjects]",
            ),
            (
                min(self.train_counts()) >= 20,
                "'n_train' leaves fewer than 20 training images for the last subject",
            ),
            (min(self.test_counts()) >= 1, "'n_test' leaves no test image for the last subject"),
            (
                10 <= self.n_vertices <= ico_vertices(5),
                f"'n_vertices' must be in [10, {ico_vertices(5)}]",
            ),
            (16 <= self.image_size <= 2048, "'image_size' must be in [16, 2048]"),
            (0 <= self.missing_fraction < 0.5, "'missing_fraction' must be in [0, 0.5)"),
            (0 <= self.shared_fraction <= 1, "'shared_fraction' must be in [0, 1]"),
            (
                self.n_fsaverage >= ico_vertices(5),
                f"'n_fsaverage' must be at least {ico_vertices(5)}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise BrainEncoderError(f"{message}; got {self}")


# ----------------------------------------------------------------------------- cortex


def _sphere(hemi: str) -> np.ndarray:
    from nilearn.datasets import load_fsaverage

    part = "left" if hemi == "lh" else "right"
    coords = np.asarray(load_fsaverage("fsaverage5")["sphere"].parts[part].coordinates)
    return coords / np.linalg.norm(coords, axis=1, keepdims=True)


@dataclass
class _Cortex:
    vertices: np.ndarray  # fsaverage indices, sorted
    uv: np.ndarray  # (n, 2) tangent-plane coordinates around the pole, in [-1, 1]
    ecc: np.ndarray  # (n,) normalized distance from the pole in [0, 1]


def _cortex(hemi: str, n_vertices: int) -> _Cortex:
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
    return _Cortex(chosen.astype(np.int64), uv, ecc)


def _smooth_field(rng: np.random.Generator, uv: np.ndarray, n_out: int, freq: float) -> np.ndarray:
    """Random smooth functions of cortical position, shape (n_vertices, n_out)."""
    omega = rng.normal(scale=freq, size=(2, 8))
    phase = rng.uniform(0, 2 * np.pi, size=8)
    basis = np.cos(uv @ omega + phase)
    return basis @ rng.normal(size=(8, n_out)) / np.sqrt(8)


# ----------------------------------------------------------------------------- images


def _draw_image(rng: np.random.Generator) -> np.ndarray:
    """A random scene at _GEN_SIZE: colour gradient, shapes, gratings. float (S, S, 3)."""
    s = _GEN_SIZE
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
    s = _GEN_SIZE
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
    s = _GEN_SIZE
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


def _features(img: np.ndarray) -> np.ndarray:
    """Phase-invariant features on a _GRID x _GRID grid, shape (5, _GRID, _GRID)."""
    lum = img @ np.array([0.299, 0.587, 0.114])
    gx = np.abs(np.diff(lum, axis=1, append=lum[:, -1:]))
    gy = np.abs(np.diff(lum, axis=0, append=lum[-1:, :]))
    rg = np.abs(img[..., 0] - img[..., 1])
    by = np.abs(img[..., 2] - 0.5 * (img[..., 0] + img[..., 1]))
    maps = np.stack([np.sqrt(gx), np.sqrt(gy), rg, by, lum])
    c = _GEN_SIZE // _GRID
    return maps.reshape(5, _GRID, c, _GRID, c).mean(axis=(2, 4))


def _save_png(path: Path, img: np.ndarray, size: int) -> None:
    from PIL import Image

    pil = Image.fromarray((img * 255).round().astype(np.uint8), mode="RGB")
    if size != _GEN_SIZE:
        pil = pil.resize((size, size), Image.Resampling.BICUBIC)
    with atomic_path(path, suffix=".png") as tmp:
        pil.save(tmp, format="PNG", compress_level=1)


# ----------------------------------------------------------------------------- responses


def _responses(
    feats: np.ndarray,
    cortex: _Cortex,
    pref: np.ndarray,
    centers: np.ndarray,
    gain: np.ndarray,
    extra: np.ndarray | None = None,
) -> np.ndarray:
    """Noise-free responses, shape (n_images, n_vertices)."""
    g = (np.arange(_GRID) + 0.5) / _GRID
    sigma = 0.06 + 0.12 * cortex.ecc
    rf_x = np.exp(-((g[None, :] - centers[:, :1]) ** 2) / (2 * sigma[:, None] ** 2))
    rf_y = np.exp(-((g[None, :] - centers[:, 1:]) ** 2) / (2 * sigma[:, None] ** 2))
    rf = rf_y[:, :, None] * rf_x[:, None, :]
    rf /= rf.sum(axis=(1, 2), keepdims=True)
    pooled = np.einsum("ncyx,vyx->nvc", feats, rf)  # (n_images, n_vertices, 5)
    drive = np.einsum("nvc,vc->nv", pooled, pref)
    drive = (drive - drive.mean(0)) / (drive.std(0) + 1e-8)
    if extra is not None:  # category selectivity (faces, places)
        drive = drive + extra
    signal = np.logaddexp(0, 2 * drive) * gain  # soft rectification
    return (signal - signal.mean(0)) / (signal.std(0) + 1e-8)


def _noise_ceiling(
    cortex: _Cortex, face_patch: np.ndarray, place_patch: np.ndarray | None = None
) -> np.ndarray:
    d_face = np.linalg.norm(cortex.uv - face_patch, axis=1)
    nc = 0.05 + 0.75 * np.exp(-((cortex.ecc / 0.55) ** 2)) + 0.5 * np.exp(-((d_face / 0.15) ** 2))
    if place_patch is not None:
        nc = nc + 0.5 * np.exp(-((np.linalg.norm(cortex.uv - place_patch, axis=1) / 0.15) ** 2))
    return np.clip(nc, 0.02, 0.9)


def _roi_labels(
    cortex: _Cortex, face_patch: np.ndarray, place_patch: np.ndarray | None = None
) -> dict[str, np.ndarray]:
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


def _patch(cx: _Cortex, n: int, seed: int, hemi: str, what: str) -> np.ndarray:
    """A seeded compact patch of ``n`` vertices (boolean over the cortex)."""
    rng = np.random.default_rng([seed, zlib.crc32(f"{hemi} {what}".encode())])
    center = rng.integers(cx.vertices.size)
    dist = np.linalg.norm(cx.uv - cx.uv[center], axis=1)
    patch = np.zeros(cx.vertices.size, dtype=bool)
    patch[np.argsort(dist, kind="stable")[:n]] = True
    return patch


# ----------------------------------------------------------------------------- writer


def _assign_images(
    rng: np.random.Generator, config: SyntheticConfig
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """NSD ids of the image pool (sorted) and each subject's (train, test) ids.

    A shared part of the pool is seen by every subject; the rest is each
    subject's own.
    """
    n_train, n_test = config.train_counts(), config.test_counts()
    n_shared = round(config.shared_fraction * min(n_train))
    n_pool = n_shared + sum(n - n_shared for n in n_train) + sum(n_test)
    nsd_ids = np.sort(rng.choice(73000, size=n_pool, replace=False))
    order = rng.permutation(n_pool)
    shared, rest = order[:n_shared], list(order[n_shared:])
    assignments = []
    for k in range(config.n_total):
        own = [rest.pop() for _ in range(n_train[k] - n_shared)]
        test = [rest.pop() for _ in range(n_test[k])]
        train = np.sort(nsd_ids[np.concatenate([shared, own]).astype(int)])
        assignments.append((train, np.sort(nsd_ids[np.array(test, dtype=int)])))
    return nsd_ids, assignments


def _draw_pool(
    rng: np.random.Generator, config: SyntheticConfig, n_pool: int
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """The pool's images, their category (0 none, 1 face, 2 place) and features.

    Returns
    -------
    images : list of ndarray of shape (_GEN_SIZE, _GEN_SIZE, 3)
    category : ndarray of int64, shape (n_pool,)
    feats : ndarray of shape (n_pool, n_features, _GRID, _GRID)
        Standardized per feature over images and positions.
    """
    images = [_draw_image(rng) for _ in range(n_pool)]
    category = np.zeros(n_pool, dtype=np.int64)
    if config.categories:  # own stream: the default dataset stays byte-identical
        crng = np.random.default_rng([config.seed, 7919])
        category = crng.choice(3, size=n_pool, p=[0.5, 0.25, 0.25])
        for i in np.flatnonzero(category == 1):
            images[i] = _draw_face(crng, images[i])
        for i in np.flatnonzero(category == 2):
            images[i] = _draw_place(crng, images[i])
    feats = np.stack([_features(img) for img in images])
    feats = (feats - feats.mean(axis=(0, 2, 3), keepdims=True)) / feats.std(
        axis=(0, 2, 3), keepdims=True
    )
    return images, category, feats


def _retinotopy(rng: np.random.Generator, cx: _Cortex, hemi: str) -> tuple[np.ndarray, np.ndarray]:
    """Every vertex's receptive-field centre (n, 2) in the image and feature preference (n, 5)."""
    side = 1.0 if hemi == "lh" else -1.0  # each hemisphere sees the opposite hemifield
    centers = np.stack(
        [0.5 + side * 0.45 * (0.5 + 0.5 * cx.uv[:, 0]), 0.5 + 0.45 * cx.uv[:, 1]], axis=1
    )
    pref = _smooth_field(rng, cx.uv, 5, freq=2.5)
    pref[:, :2] += 1.0  # edges drive most vertices; colour and luminance vary over cortex
    return centers, pref


def _kept_vertices(
    cx: _Cortex, config: SyntheticConfig, k: int, hemi: str, sub_rng: np.random.Generator
) -> np.ndarray:
    """Which of the hemisphere's vertices subject ``k`` has (bool, shape (n,))."""
    keep = np.ones(cx.vertices.size, dtype=bool)
    n_miss = round(config.missing_fraction * cx.vertices.size)
    if k == config.n_subjects - 1 and config.n_subjects > 1:
        seed_v = sub_rng.integers(cx.vertices.size)
        dist = np.linalg.norm(cx.uv - cx.uv[seed_v], axis=1)
        keep[np.argsort(dist, kind="stable")[:n_miss]] = False
    if config.held_out:
        own_patch = _patch(cx, n_miss, config.seed, hemi, "held-out own")
        if k < config.n_subjects:
            keep &= ~own_patch  # only held-out subjects have these vertices
        else:
            keep &= ~_patch(cx, n_miss, config.seed + k, hemi, "held-out lacks")
    return keep


def _category_drive(cx: _Cortex, cat: np.ndarray) -> np.ndarray:
    """Extra response (n_images, n_vertices) of the face and place patches to their category."""
    d_face = np.linalg.norm(cx.uv - _FACE_PATCH, axis=1)
    d_place = np.linalg.norm(cx.uv - _PLACE_PATCH, axis=1)
    return 3.0 * (
        (cat == 1)[:, None] * np.exp(-((d_face / 0.15) ** 2))[None]
        + (cat == 2)[:, None] * np.exp(-((d_place / 0.15) ** 2))[None]
    )


def _write_hemi(
    dirs: dict[str, Path],
    hemi: str,
    cx: _Cortex,
    retinotopy: tuple[np.ndarray, np.ndarray],
    pool: tuple[np.ndarray, np.ndarray],
    n_train: int,
    config: SyntheticConfig,
    k: int,
    sub_rng: np.random.Generator,
) -> None:
    """Subject ``k``'s mask, ROI labels, training fMRI and test truth of one hemisphere.

    ``pool`` is (features, category) of the subject's train then test images.
    """
    centers, pref = retinotopy
    feats, category = pool
    keep = _kept_vertices(cx, config, k, hemi, sub_rng)
    mask = np.zeros(config.n_fsaverage, dtype=np.int32)
    mask[cx.vertices[keep]] = 1
    roi_dir = dirs["roi"]
    np.save(roi_dir / f"{hemi}.all-vertices_fsaverage_space.npy", mask)
    place_patch = _PLACE_PATCH if config.categories else None
    for group, labels in _roi_labels(cx, _FACE_PATCH, place_patch).items():
        fs_labels = np.zeros(config.n_fsaverage, dtype=np.int32)
        fs_labels[cx.vertices[keep]] = labels[keep]
        np.save(roi_dir / f"{hemi}.{group}_fsaverage_space.npy", fs_labels)
        np.save(roi_dir / f"{hemi}.{group}_challenge_space.npy", labels[keep])
    jitter = sub_rng.normal(scale=0.02, size=centers.shape)
    gain = 1 + 0.1 * sub_rng.normal(size=cx.vertices.size)
    nc = _noise_ceiling(cx, _FACE_PATCH, place_patch)[keep]
    sd = np.sqrt((1 - nc) / nc)
    extra = _category_drive(cx, category) if config.categories else None
    signal = _responses(feats, cx, pref, centers + jitter, gain, extra)[:, keep]
    measured = (signal + sd * sub_rng.normal(size=signal.shape)).astype(np.float32)
    truth = dirs["truth"]
    save_npy_atomic(dirs["fmri"] / f"{hemi}_training_fmri.npy", measured[:n_train])
    save_npy_atomic(truth / f"{hemi}_test_fmri.npy", measured[n_train:])
    save_npy_atomic(truth / f"{hemi}_test_signal.npy", signal[n_train:].astype(np.float32))
    save_npy_atomic(truth / f"{hemi}_noise_ceiling.npy", nc.astype(np.float32))


def _subject_dirs(out: Path, name: str) -> dict[str, Path]:
    subj = out / name
    dirs = {
        "roi": subj / "roi_masks",
        "train": subj / "training_split" / "training_images",
        "test": subj / "test_split" / "test_images",
        "fmri": subj / "training_split" / "training_fmri",
        "truth": out / "truth" / name,
    }
    for d in dirs.values():
        d.mkdir(parents=True)
    return dirs


def make_synthetic(out: str | Path, config: SyntheticConfig | None = None) -> Path:
    """Write a synthetic dataset in the challenge layout, with its truth.

    Parameters
    ----------
    out : path
        Folder to create; it will hold ``subjXX/`` folders (the data root) and
        ``truth/subjXX/{lh,rh}_{noise_ceiling,test_fmri,test_signal}.npy``.
    config : SyntheticConfig, optional
        Sizes, noise and seed; the same config gives identical files.

    Returns
    -------
    out : Path
    """
    config = config or SyntheticConfig()
    config.validate()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise BrainEncoderError(f"{out} exists and is not empty; choose a new folder")
    rng = np.random.default_rng(config.seed)
    names = [f"subj{k + 1:02d}" for k in range(config.n_total)]
    nsd_ids, assignments = _assign_images(rng, config)
    images, category, feats = _draw_pool(rng, config, nsd_ids.size)
    by_nsd = dict(zip(nsd_ids.tolist(), range(nsd_ids.size)))
    cortices = {h: _cortex(h, config.n_vertices) for h in HEMIS}
    maps = {hemi: _retinotopy(rng, cx, hemi) for hemi, cx in cortices.items()}
    groups = dict(ROI_GROUPS)
    if config.categories:
        groups["floc-places"] = ["Unknown", "OPA", "PPA", "RSC"]

    with ThreadPoolExecutor() as pool:
        jobs = []
        for k, name in enumerate(names):
            dirs = _subject_dirs(out, name)
            train_ids, test_ids = assignments[k]
            for split, ids in (("train", train_ids), ("test", test_ids)):
                for i, nsd in enumerate(ids.tolist()):
                    path = dirs[split] / f"{split}-{i + 1:04d}_nsd-{nsd:05d}.png"
                    jobs.append(
                        pool.submit(_save_png, path, images[by_nsd[nsd]], config.image_size)
                    )
            for name_group, labels in groups.items():
                save_mapping(dirs["roi"] / f"mapping_{name_group}.npy", dict(enumerate(labels)))
            sub_rng = np.random.default_rng([config.seed, k])
            rows = [by_nsd[i] for i in np.concatenate([train_ids, test_ids]).tolist()]
            for hemi, cx in cortices.items():
                pool_rows = (feats[rows], category[rows])
                _write_hemi(
                    dirs, hemi, cx, maps[hemi], pool_rows, train_ids.size, config, k, sub_rng
                )
        for job in jobs:
            job.result()
    if config.categories:
        names_of = {0: "none", 1: "face", 2: "place"}
        write_json_atomic(
            out / "truth" / "categories.json",
            {f"{int(nsd):05d}": names_of[int(category[i])] for nsd, i in by_nsd.items()},
        )
    write_json_atomic(
        out / "truth" / "synthetic.json",
        {**asdict(config), "held_out_subjects": config.held_out_names()},
    )
    logger.info("wrote synthetic dataset with %d subjects to %s", config.n_total, out)
    return out
