"""brainencoder: multi-subject fMRI encoding models for NSD / Algonauts 2023.

``import brainencoder as be`` gives the Python API (:mod:`brainencoder.api`):
``be.load``, ``be.train``, ``be.evaluate``, ``be.adapt``, ... Names are
imported on first use, so ``import brainencoder`` stays fast and free of side
effects.
"""

from __future__ import annotations

from typing import Any

from .util.version import __version__

_API = (
    "Model",
    "Prediction",
    "adapt",
    "compare",
    "evaluate",
    "explore",
    "list_readouts",
    "list_trunks",
    "load",
    "prepare",
    "score",
    "train",
)

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'brainencoder' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
