"""brainencoder: multi-subject fMRI encoding models for NSD / Algonauts 2023."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
