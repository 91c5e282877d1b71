"""brainencoder: multi-subject fMRI encoding models for NSD / Algonauts 2023."""

from __future__ import annotations

from .util.version import __version__

__all__ = ["__version__"]
