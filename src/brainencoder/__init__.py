"""brainencoder: multi-subject fMRI encoding models for NSD / Algonauts 2023.

``import brainencoder as be`` gives the Python API (:mod:`brainencoder.api`):
``be.load``, ``be.train``, ``be.evaluate``, ``be.adapt``, ... Names are
imported on first use, so ``import brainencoder`` stays fast and free of side
effects.
"""

from __future__ import annotations

from typing import Any

from .util.version import __version__

#: the public API, the one list of its names: ``brainencoder.api`` exports these
#: (its ``__all__`` is read from here) and ``docs/api.md`` documents each
__all__ = [
    "Model",
    "Prediction",
    "__version__",
    "adapt",
    "baseline",
    "calibrate",
    "compare",
    "evaluate",
    "explore",
    "export",
    "import_original",
    "list_encoders",
    "list_readouts",
    "list_trunks",
    "load",
    "pca",
    "plan",
    "plot",
    "prepare",
    "report",
    "score",
    "soup",
    "submit",
    "synth",
    "synthesize",
    "train",
    "validate",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'brainencoder' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
