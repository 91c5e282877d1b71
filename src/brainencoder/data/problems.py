"""A problem found in a dataset: where, what, and whether it blocks training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..util.errors import printable

__all__ = ["Problem"]


@dataclass(frozen=True)
class Problem:
    """One problem found in a dataset.

    Attributes
    ----------
    path : Path
        The file or folder the problem is about.
    message : str
        What is wrong and, where useful, what to do.
    blocking : bool
        Whether training cannot proceed while the problem remains.
    """

    path: Path
    message: str
    blocking: bool = True

    def __str__(self) -> str:
        kind = "ERROR" if self.blocking else "WARNING"
        # a file name that is not UTF-8 is shown with \xNN escapes (printing it raw fails)
        return printable(f"{kind} {self.path}: {self.message}")
