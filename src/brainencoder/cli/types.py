"""argparse types shared by the command modules."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["non_negative_int", "positive_int", "row_slice"]


def _int_at_least(minimum: int, description: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {description}; got {text!r}")
        return value

    parse.__doc__ = f"argparse type: {description}."
    return parse


positive_int = _int_at_least(1, "a positive integer")
non_negative_int = _int_at_least(0, "an integer >= 0")


def row_slice(text: str) -> slice:
    """argparse type: ``START:STOP`` (either may be left out) -> slice; STOP is open."""
    start, sep, stop = text.partition(":")
    try:
        if not sep:
            raise ValueError
        rows = slice(int(start) if start else None, int(stop) if stop else None)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected START:STOP, e.g. 0:1000; got {text!r}"
        ) from None
    if (rows.start or 0) < 0 or (rows.stop is not None and rows.stop <= (rows.start or 0)):
        raise argparse.ArgumentTypeError(f"expected 0 <= START < STOP; got {text!r}")
    return rows
