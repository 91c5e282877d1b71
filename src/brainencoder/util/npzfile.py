"""``.npz`` files written byte for byte the same from the same arrays, atomically.

:func:`numpy.savez` stamps each member with the time of writing, so two writes
of the same arrays differ; here every member carries a fixed date, so a file
written by a command and by its Python twin can be compared byte for byte.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .fileio import atomic_path

__all__ = ["write_npz_atomic"]

_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip member can carry


def write_npz_atomic(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` to ``path`` as an uncompressed ``.npz`` (moved into place when complete).

    Parameters
    ----------
    path : path
        The file to write (its suffix is kept as given).
    arrays : mapping of str to ndarray
        Member names (without ``.npy``) to arrays of any shape; no object arrays.

    Returns
    -------
    Path
        ``path``; ``numpy.load(path)`` reads the arrays back.
    """
    path = Path(path)
    with atomic_path(path, suffix=path.suffix) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, array in arrays.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=_DATE)
                info.external_attr = 0o644 << 16
                with zf.open(info, "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, np.asarray(array), allow_pickle=False)
    return path
