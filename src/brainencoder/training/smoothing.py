"""The smoothness prior's training side: the store's surface neighbours and the weight's ramp.

The prior itself (what it penalizes) is
:mod:`brainencoder.models.readouts.smoothness`.
"""

from __future__ import annotations

import numpy as np

from ..core.surface_graph import surface_edges
from ..data.store import Store
from ..models.readouts import readout_class
from ..models.readouts.smoothness import check_smoothable
from .config import TrainConfig

__all__ = ["smoothness_at", "surface_neighbours"]


def surface_neighbours(config: TrainConfig, store: Store) -> np.ndarray | None:
    """The mesh edges between ``store``'s group vertices when ``smoothness`` is on, else None.

    A readout the config names that has no per-vertex tuning is refused here,
    before any work (an ``init_from`` model's readout is checked once loaded).

    Returns
    -------
    ndarray of int64, shape (n_edges, 2), or None
    """
    if not config.smoothness:
        return None
    if not config.init_from:
        check_smoothable(readout_class(config.encoder_config().readout["name"]))
    return surface_edges(store.space)


def smoothness_at(step: int, total_steps: int, weight: float) -> float:
    """Weight of the smoothness prior at ``step`` (0-based): a linear ramp to ``weight``.

    The prior starts at ``weight / total_steps`` and reaches ``weight`` at the
    last step: early steps fit every vertex freely, later ones pull neighbours
    together (at full weight from the start, a short run under-fits: the
    neighbours' consensus takes many steps).
    """
    return weight * min(1.0, (step + 1) / max(1, total_steps))
