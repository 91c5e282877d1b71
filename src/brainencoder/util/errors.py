"""Exceptions with messages meant for users.

Every error raised on bad input derives from :class:`BrainEncoderError`; the
command-line interface prints its message (no traceback) and exits with
status 1.
"""

from __future__ import annotations

__all__ = [
    "BrainEncoderError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "StoreError",
    "UnsafeFileError",
    "printable",
]


def printable(text: str) -> str:
    """``text`` with file-name bytes that are not UTF-8 shown as ``\\xNN``.

    Python reads such bytes of a file name as lone surrogates
    (``os.fsdecode``), which a UTF-8 stream refuses to write
    (UnicodeEncodeError); shown as escapes, the name still says which file it is.
    """
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


class BrainEncoderError(Exception):
    """Base class of all user-facing errors of brainencoder.

    Its text is :func:`printable`: a file name that is not UTF-8 cannot make
    printing the message fail.
    """

    def __str__(self) -> str:
        return printable(super().__str__())


class DataError(BrainEncoderError):
    """A data file is missing, malformed or inconsistent with the others."""


class UnsafeFileError(DataError):
    """A file asked to run code or escape its directory while being read."""


class ConfigError(BrainEncoderError, ValueError):
    """A configuration key or value is invalid."""


class StoreError(BrainEncoderError):
    """A prepared store is missing, incomplete, or from another dataset/version."""


class CheckpointError(BrainEncoderError):
    """A checkpoint or run directory cannot be used as asked."""
