"""Exceptions with messages meant for users.

Every error raised on bad input derives from :class:`BrainEncoderError`; the
command-line interface prints its message (no traceback) and exits with
status 1.
"""

from __future__ import annotations


class BrainEncoderError(Exception):
    """Base class of all user-facing errors of brainencoder."""


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
