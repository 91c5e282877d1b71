"""A smoothness prior on a readout's per-vertex tuning over the cortical surface.

Neighbouring vertices of visual cortex see neighbouring parts of the image and
prefer similar features (retinotopic maps are smooth), so a vertex's tuning
is estimated better with its neighbours' data than from its own noisy
responses alone. With ``smoothness: LAMBDA`` in the training config, the loss
gains ``LAMBDA`` times, for every tuning tensor the readout names in
``personal_tensors`` (``point``: positions, widths, layer selector, feature
weights; ``roi_query``: each vertex's map of its region's outputs), the mean
over the surface's edges ``(i, j)`` of ``||t_i - t_j||^2``, the squared
difference of the two vertices' slices summed over the tensor's other axes.
The weight ramps linearly from 0 to ``LAMBDA`` over the run's steps
(:func:`brainencoder.training.smoothing.smoothness_at`).
Tensors are compared as the readout uses them: a stored tensor divided by
``personal_step(name)``, so ``point``'s positions (before their tanh) and
log-widths count in map units, not in their stored, slowed-down form.
"""

from __future__ import annotations

import torch
from torch import nn

from ...util.errors import ConfigError

__all__ = ["check_smoothable", "smoothness_penalty"]


def check_smoothable(readout: nn.Module | type) -> None:
    """Refuse a readout (or readout class) without per-vertex tuning tensors."""
    if not getattr(readout, "personal_tensors", ()):
        name = getattr(readout, "name", None) or type(readout).__name__
        raise ConfigError(
            f"'smoothness' smooths a readout's per-vertex tuning; {name!r} has none "
            "(readouts that do: point, roi_query): set smoothness: 0"
        )


def smoothness_penalty(readout: nn.Module, edges: torch.Tensor) -> torch.Tensor:
    """Sum over the tuning tensors of the mean squared difference across ``edges``.

    Parameters
    ----------
    readout : Readout
        With ``personal_tensors``, ``vertex_axes`` and optionally ``personal_step``.
    edges : LongTensor of shape (n_edges, 2)
        Group indices of neighbouring vertices
        (:func:`brainencoder.core.surface_graph.surface_edges`).

    Returns
    -------
    Tensor of shape ()
    """
    check_smoothable(readout)
    total = next(readout.parameters()).new_zeros((), dtype=torch.float32)
    if edges.numel() == 0:  # no two vertices are neighbours: nothing to smooth
        return total
    step = getattr(readout, "personal_step", lambda name: 1.0)
    for name in readout.personal_tensors:
        tensor = getattr(readout, name) / step(name)
        by_vertex = tensor.movedim(readout.vertex_axes[name], 0).flatten(1).float()
        diff = by_vertex.index_select(0, edges[:, 0]) - by_vertex.index_select(0, edges[:, 1])
        total = total + diff.pow(2).sum(1).mean()
    return total
