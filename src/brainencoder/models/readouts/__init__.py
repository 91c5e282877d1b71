"""Multi-subject readouts: features + subject -> every group vertex.

Importing this package registers the built-in readouts (``grouplin``,
``grouplin_seq``, ``point``, ``roi_query``). A new readout is one file here plus its import below.
"""

from __future__ import annotations

from . import grouplin, grouplin_seq, point, roi_query  # noqa: F401  (registration)
from .base import (
    Readout,
    create_readout,
    list_readouts,
    readout_class,
    register_readout,
    validate_readout_config,
)

__all__ = [
    "Readout",
    "create_readout",
    "list_readouts",
    "readout_class",
    "register_readout",
    "validate_readout_config",
]
