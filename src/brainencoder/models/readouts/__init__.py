"""Multi-subject readouts: features + subject -> every group vertex.

Importing this package registers the built-in readouts (``grouplin``,
``grouplin_seq``, ``point``, ``roi_query``). A new readout is one file here
plus its import below, or a module of the user's own named as a plugin
(:mod:`brainencoder.util.plugins`).
"""

from __future__ import annotations

from . import grouplin, grouplin_seq, point, roi_query  # noqa: F401  (registration)
from .base import (
    READOUTS,
    Readout,
    create_readout,
    list_readouts,
    readout_class,
    register_readout,
    validate_readout_config,
)
from .context import ReadoutContext

__all__ = [
    "READOUTS",
    "Readout",
    "ReadoutContext",
    "create_readout",
    "list_readouts",
    "readout_class",
    "register_readout",
    "validate_readout_config",
]
