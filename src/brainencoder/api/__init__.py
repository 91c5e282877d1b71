"""The Python API: ``import brainencoder as be``.

>>> import brainencoder as be                                   # doctest: +SKIP
>>> model = be.load("demo-output/runs/phase2")                  # doctest: +SKIP
>>> pred = model.predict(images, subject="subj01")              # doctest: +SKIP
>>> maps = pred.to_fsaverage()                                  # doctest: +SKIP
>>> ffa = pred.roi("FFA-1").mean(axis=1)                        # doctest: +SKIP
"""

from __future__ import annotations

from .model import Model, load
from .predictions import Prediction
from .workflows import (
    adapt,
    compare,
    evaluate,
    explore,
    list_readouts,
    list_trunks,
    prepare,
    score,
    train,
)

__all__ = [
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
]
