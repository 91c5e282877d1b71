"""The Python API: ``import brainencoder as be``.

>>> import brainencoder as be                                   # doctest: +SKIP
>>> model = be.load("demo-output/runs/phase2")                  # doctest: +SKIP
>>> pred = model.predict(images, subject="subj01")              # doctest: +SKIP
>>> maps = pred.to_fsaverage()                                  # doctest: +SKIP
>>> ffa = pred.roi("FFA-1").mean(axis=1)                        # doctest: +SKIP
"""

# The names are listed once, in the package's ``__all__`` (``brainencoder/__init__.py``);
# the imports below only say where each comes from (tests/test_registries.py checks
# that they are the same names), so ruff cannot see them used.
# ruff: noqa: F401

from __future__ import annotations

from .. import __all__ as _PACKAGE_ALL
from .calibration import calibrate
from .data_tools import pca, synth, validate
from .insilico import synthesize
from .model import Model, load
from .model_tools import baseline, import_original, soup
from .outputs import plot, report
from .planning import plan
from .predictions import Prediction
from .share import export
from .submission import submit
from .workflows import (
    adapt,
    compare,
    evaluate,
    explore,
    list_encoders,
    list_readouts,
    list_trunks,
    prepare,
    score,
    train,
)

__all__ = [name for name in _PACKAGE_ALL if name != "__version__"]
