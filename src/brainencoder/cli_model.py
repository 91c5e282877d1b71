"""Commands that need a model (train, evaluate, predict, submit, ...)."""

from __future__ import annotations

import argparse

__all__ = ["add_model_commands"]


def add_model_commands(sub: argparse._SubParsersAction) -> None:
    """Register the model commands on the subparsers ``sub``."""
