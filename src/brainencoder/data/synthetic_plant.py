"""The planted truth of a synthetic dataset, in memory: pool, world, subjects' tuning and signal.

:func:`build_state` replays the dataset's generator from its config (the same
random streams in the same order), so :func:`~.synthetic.make_synthetic`
(which writes the files) and :mod:`.synthetic_oracle` (which recomputes the
planted response of any image) share one implementation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from .layout import HEMIS
from .synthetic_features import draw_shape
from .synthetic_images import draw_images, standardize_features
from .synthetic_truth import (
    FACE_PATCH,
    PLACE_PATCH,
    Cortex,
    category_drive,
    make_cortex,
    noise_ceiling,
    smooth_field,
    vertex_patch,
)
from .synthetic_worlds import WORLDS, Tuning, World, group_tuning, respond

if TYPE_CHECKING:
    from .synthetic import SyntheticConfig

__all__ = ["PlantedHemi", "WorldState", "build_state", "plant_hemi", "world_features"]


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


def world_features(
    world: World, images: list[np.ndarray], stats: tuple | None = None
) -> tuple[np.ndarray, tuple]:
    """The world's standardized features of ``images``.

    Parameters
    ----------
    world : World
    images : list of ndarray of shape (GEN_SIZE, GEN_SIZE, 3)
    stats : tuple, optional
        The pool's standardization statistics; computed from ``images`` when absent.

    Returns
    -------
    feats : ndarray of shape (n_images, n_features, GRID, GRID)
    stats : tuple
    """
    feats = np.stack([world.features(img) for img in images])
    return standardize_features(feats, world.centred, stats)


@dataclass
class WorldState:
    """Everything of a dataset's planted truth that does not depend on the subject.

    ``images``, ``category`` and ``feats`` follow ``nsd_ids`` (the pool,
    sorted); ``feat_stats`` are the pool's feature statistics; ``tunings``
    the group's tuning per hemisphere; ``by_nsd`` maps an nsd id to its row.
    """

    config: SyntheticConfig
    world: World
    nsd_ids: np.ndarray
    assignments: list[tuple[np.ndarray, np.ndarray]]
    images: list[np.ndarray]
    category: np.ndarray
    feats: np.ndarray
    feat_stats: tuple
    cortices: dict[str, Cortex]
    tunings: dict[str, Tuning]

    @property
    def by_nsd(self) -> dict[int, int]:
        return dict(zip(self.nsd_ids.tolist(), range(self.nsd_ids.size)))

    def rows(self, k: int) -> list[int]:
        """Pool rows of subject ``k``'s training then test images."""
        by_nsd = self.by_nsd
        return [by_nsd[i] for i in np.concatenate(self.assignments[k]).tolist()]

    def knobs(self) -> tuple[float, float]:
        """(rf shift, tuning jitter): the config's where set, else the world's presets."""
        c, w = self.config, self.world
        return (
            c.subject_rf_shift or w.subject_rf_shift,
            c.subject_tuning_jitter or w.subject_tuning_jitter,
        )


def build_state(config: SyntheticConfig) -> WorldState:
    """Replay the generator's draws that all subjects share (pool, images, features, maps).

    Parameters
    ----------
    config : SyntheticConfig

    Returns
    -------
    WorldState
    """
    world = WORLDS.get(config.world)
    rng = np.random.default_rng(config.seed)
    nsd_ids, assignments = _assign_images(rng, config)
    images, category = draw_images(rng, nsd_ids.size, config.categories, config.seed)
    if world.shapes:  # own stream
        srng = np.random.default_rng([config.seed, 104729])
        images = [draw_shape(srng, img) for img in images]
    feats, feat_stats = world_features(world, images)
    cortices = {h: make_cortex(h, config.n_vertices) for h in HEMIS}
    tunings = {hemi: group_tuning(rng, world, cx, hemi) for hemi, cx in cortices.items()}
    return WorldState(
        config, world, nsd_ids, assignments, images, category, feats, feat_stats, cortices, tunings
    )


def _kept_vertices(
    cx: Cortex, config: SyntheticConfig, k: int, hemi: str, sub_rng: np.random.Generator
) -> np.ndarray:
    """Which of the hemisphere's vertices subject ``k`` has (bool, shape (n,))."""
    keep = np.ones(cx.vertices.size, dtype=bool)
    n_miss = round(config.missing_fraction * cx.vertices.size)
    if k == config.n_subjects - 1 and config.n_subjects > 1:
        seed_v = sub_rng.integers(cx.vertices.size)
        dist = np.linalg.norm(cx.uv - cx.uv[seed_v], axis=1)
        keep[np.argsort(dist, kind="stable")[:n_miss]] = False
    if config.held_out:
        own_patch = vertex_patch(cx, n_miss, config.seed, hemi, "held-out own")
        if k < config.n_subjects:
            keep &= ~own_patch  # only held-out subjects have these vertices
        else:
            keep &= ~vertex_patch(cx, n_miss, config.seed + k, hemi, "held-out lacks")
    return keep


def _subject_tuning(state: WorldState, k: int, hemi: str, jitter: np.ndarray) -> Tuning:
    """The group's tuning with subject ``k``'s small jitter and its per-vertex differences.

    The differences (smooth over the cortex) come from a stream of their own,
    so that with both knobs at 0 every other draw is unchanged.
    """
    group, cx = state.tunings[hemi], state.cortices[hemi]
    shift, tuning_jitter = state.knobs()
    centers, pref = group.centers + jitter, group.pref
    if shift or tuning_jitter:
        krng = np.random.default_rng([state.config.seed, k, 31337, HEMIS.index(hemi)])
        centers = centers + shift * np.sqrt(2) * smooth_field(krng, cx.uv, 2, freq=2.5)
        pref = pref + tuning_jitter * np.sqrt(2) * smooth_field(krng, cx.uv, pref.shape[1], 2.5)
    return replace(group, centers=centers, pref=pref)


@dataclass
class PlantedHemi:
    """One subject's hemisphere: its vertices, tuning, noise ceiling and noise-free signal.

    ``signal`` (n_images, n_kept) covers the subject's training then test
    images; ``stats`` standardizes any other image's response the same way.
    """

    keep: np.ndarray
    tuning: Tuning
    gain: np.ndarray
    nc: np.ndarray
    signal: np.ndarray
    stats: dict


def plant_hemi(state: WorldState, k: int, hemi: str, sub_rng: np.random.Generator) -> PlantedHemi:
    """Subject ``k``'s planted truth in ``hemi`` (draws from ``sub_rng`` as the writer does).

    Parameters
    ----------
    state : WorldState
    k : int
        Subject index (0-based; held-out subjects follow the group's).
    hemi : {"lh", "rh"}
    sub_rng : numpy.random.Generator
        The subject's generator, drawn from hemisphere after hemisphere.

    Returns
    -------
    PlantedHemi
    """
    config, cx = state.config, state.cortices[hemi]
    keep = _kept_vertices(cx, config, k, hemi, sub_rng)
    jitter = sub_rng.normal(scale=0.02, size=state.tunings[hemi].centers.shape)
    gain = 1 + 0.1 * sub_rng.normal(size=cx.vertices.size)
    tuning = _subject_tuning(state, k, hemi, jitter)
    place_patch = PLACE_PATCH if config.categories else None
    nc = noise_ceiling(cx, FACE_PATCH, place_patch)
    if state.world.nc_scale != 1.0:
        nc = np.clip(nc * state.world.nc_scale, 0.02, 0.9)
    rows = state.rows(k)
    extra = category_drive(cx, state.category[rows]) if config.categories else None
    stats: dict = {}
    signal = respond(state.world, state.feats[rows], cx, tuning, gain, extra, stats)
    return PlantedHemi(keep, tuning, gain, nc[keep], signal[:, keep], stats)
