"""Planted worlds: generators that differ in what drives the synthetic responses.

A :class:`World` says which image features the planted vertices read, how
large their receptive fields are, which nonlinearity turns the pooled drive
into a response, how much of the drive comes from image-global factors
shared by many vertices, how noisy the measurements are and how much the
subjects' tuning differs. :data:`WORLDS` registers them by name
(``SyntheticConfig.world``, ``brainencoder synth --world NAME``):

``retino``
    The original generator (byte-identical): gradient energy in two
    orientations, colour-opponent contrast and luminance, pooled over
    Gaussian receptive fields on a retinotopic map, soft rectification.
``edges``
    Edge energy at three scales, small receptive fields, compressive
    spatial summation (the pooled energy to the power 0.4).
``colour``
    Signed colour opponency, local contrast and luminance, saturating drive
    (``s**2 / (s**2 + 1)``), noisier measurements.
``shapes``
    A large shape in every image (disc, ring, bar) read by blob and bar
    detectors through large fields, plus image-global factors (each
    feature's mean over the image) shared by many vertices; noisier still.
``subjects``
    ``retino``'s features, with subjects that differ per vertex:
    receptive-field centres shifted and feature weights jittered smoothly
    around the group's (presets of ``subject_rf_shift`` and
    ``subject_tuning_jitter``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..util.registry import Registry
from .synthetic_features import colour_features, edge_features, shape_features
from .synthetic_images import GRID, image_features
from .synthetic_truth import Cortex, smooth_field

__all__ = ["WORLDS", "Tuning", "World", "group_tuning", "respond"]


@dataclass(frozen=True)
class World:
    """One planted world (see the module docstring for the registered ones).

    Attributes
    ----------
    features : callable
        One image (GEN_SIZE, GEN_SIZE, 3) -> maps (n_features, GRID, GRID).
    n_features : int
    pref_offset : tuple of float
        Added to every vertex's smooth random preference, per feature.
    response : {"softplus", "compressive", "saturating"}
    rf_size : (float, float)
        Receptive-field sd (image widths) at the pole and its growth to the
        periphery.
    centred : bool
        Features standardized over the pool (mean 0, sd 1); otherwise only
        scaled by their pool mean (kept non-negative, for ``compressive``).
    global_weight : float
        Share of the drive from image-global factors (features averaged over
        the image) read with a slowly varying weight field.
    nc_scale : float
        Multiplies the planted noise ceilings (lower: noisier measurements).
    shapes : bool
        Paint one large shape on every image (a stream of its own).
    subject_rf_shift, subject_tuning_jitter : float
        Presets used where ``SyntheticConfig``'s knobs are 0.
    """

    features: Callable[[np.ndarray], np.ndarray]
    n_features: int
    pref_offset: tuple[float, ...]
    response: str = "softplus"
    rf_size: tuple[float, float] = (0.06, 0.12)
    centred: bool = True
    global_weight: float = 0.0
    nc_scale: float = 1.0
    shapes: bool = False
    subject_rf_shift: float = 0.0
    subject_tuning_jitter: float = 0.0


WORLDS: Registry[World] = Registry("synthetic world")
WORLDS.register("retino", World(image_features, 5, (1.0, 1.0, 0.0, 0.0, 0.0)))
WORLDS.register(
    "edges",
    World(
        edge_features,
        6,
        (0.3,) * 6,
        response="compressive",
        rf_size=(0.04, 0.1),
        centred=False,
    ),
)
WORLDS.register(
    "colour",
    World(
        colour_features,
        4,
        (0.0, 0.0, 1.0, 0.0),
        response="saturating",
        rf_size=(0.08, 0.14),
        nc_scale=0.8,
    ),
)
WORLDS.register(
    "shapes",
    World(
        shape_features,
        4,
        (1.0, 0.5, 0.5, 0.0),
        rf_size=(0.15, 0.2),
        global_weight=0.4,
        nc_scale=0.7,
        shapes=True,
    ),
)
WORLDS.register(
    "subjects",
    World(
        image_features,
        5,
        (1.0, 1.0, 0.0, 0.0, 0.0),
        subject_rf_shift=0.05,
        subject_tuning_jitter=0.6,
    ),
)


@dataclass(frozen=True)
class Tuning:
    """The planted tuning of one hemisphere's vertices (the group's or one subject's).

    Attributes
    ----------
    centers : ndarray of shape (n_vertices, 2)
        Receptive-field centres (x, y) in image widths.
    pref : ndarray of shape (n_vertices, n_features)
        Feature weights.
    global_pref : ndarray of shape (n_vertices, n_features) or None
        Weights of the image-global factors (worlds with ``global_weight``).
    """

    centers: np.ndarray
    pref: np.ndarray
    global_pref: np.ndarray | None = None


def group_tuning(rng: np.random.Generator, world: World, cx: Cortex, hemi: str) -> Tuning:
    """Every vertex's receptive-field centre and feature preference (the group's).

    Parameters
    ----------
    rng : numpy.random.Generator
    world : World
    cx : Cortex
    hemi : {"lh", "rh"}
        Each hemisphere sees the opposite hemifield.

    Returns
    -------
    Tuning
    """
    side = 1.0 if hemi == "lh" else -1.0
    centers = np.stack(
        [0.5 + side * 0.45 * (0.5 + 0.5 * cx.uv[:, 0]), 0.5 + 0.45 * cx.uv[:, 1]], axis=1
    )
    pref = smooth_field(rng, cx.uv, world.n_features, freq=2.5)
    if world.response == "compressive":  # non-negative weights of non-negative energies
        pref = np.abs(pref)
    pref = pref + np.asarray(world.pref_offset)
    global_pref = None
    if world.global_weight:
        global_pref = smooth_field(rng, cx.uv, world.n_features, freq=0.8)
    return Tuning(centers, pref, global_pref)


def _standardize(x: np.ndarray, stats: dict, key: str) -> np.ndarray:
    """``x`` standardized per column with ``stats[key]``, computed from ``x`` when absent."""
    if key not in stats:
        stats[key] = (x.mean(0), x.std(0))
    mu, sd = stats[key]
    return (x - mu) / (sd + 1e-8)


def _drive(world: World, feats: np.ndarray, cx: Cortex, tuning: Tuning, stats: dict) -> np.ndarray:
    """The drive of every vertex before its nonlinearity, shape (n_images, n_vertices)."""
    g = (np.arange(GRID) + 0.5) / GRID
    sigma = world.rf_size[0] + world.rf_size[1] * cx.ecc
    centers = tuning.centers
    rf_x = np.exp(-((g[None, :] - centers[:, :1]) ** 2) / (2 * sigma[:, None] ** 2))
    rf_y = np.exp(-((g[None, :] - centers[:, 1:]) ** 2) / (2 * sigma[:, None] ** 2))
    rf = rf_y[:, :, None] * rf_x[:, None, :]
    rf /= rf.sum(axis=(1, 2), keepdims=True)
    pooled = np.einsum("ncyx,vyx->nvc", feats, rf)  # (n_images, n_vertices, n_features)
    drive = np.einsum("nvc,vc->nv", pooled, tuning.pref)
    if world.response == "compressive":  # positive drive, in units of its mean
        if "drive" not in stats:
            stats["drive"] = (drive.mean(0), None)
        return drive / (stats["drive"][0] + 1e-8)
    drive = _standardize(drive, stats, "drive")
    if tuning.global_pref is not None:
        overall = feats.mean(axis=(2, 3)) @ tuning.global_pref.T
        overall = _standardize(overall, stats, "global")
        drive = (1 - world.global_weight) * drive + world.global_weight * overall
    return drive


def respond(
    world: World,
    feats: np.ndarray,
    cx: Cortex,
    tuning: Tuning,
    gain: np.ndarray,
    extra: np.ndarray | None = None,
    stats: dict | None = None,
) -> np.ndarray:
    """Noise-free planted responses, standardized per vertex.

    Parameters
    ----------
    world : World
    feats : ndarray of shape (n_images, n_features, GRID, GRID)
        The world's features, standardized with the pool's statistics.
    cx : Cortex
    tuning : Tuning
        Of the vertices of ``cx`` (n_vertices).
    gain : ndarray of shape (n_vertices,)
    extra : ndarray of shape (n_images, n_vertices), optional
        Added drive (category selectivity) before the nonlinearity.
    stats : dict, optional
        Standardization statistics: where empty or absent, computed from
        these images and stored in it; where filled (by an earlier call on
        the subject's own images), applied to these images.

    Returns
    -------
    ndarray of shape (n_images, n_vertices)
    """
    stats = {} if stats is None else stats
    drive = _drive(world, feats, cx, tuning, stats)
    if extra is not None:  # category selectivity (faces, places)
        drive = drive + extra
    if world.response == "compressive":
        signal = np.maximum(drive, 0) ** 0.4 * gain
    elif world.response == "saturating":
        s = np.logaddexp(0, 2 * drive)
        signal = s**2 / (s**2 + 1.0) * gain
    else:
        signal = np.logaddexp(0, 2 * drive) * gain  # soft rectification
    return _standardize(signal, stats, "signal")
