"""The package version and the git revision of the installed source tree."""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["__version__", "git_revision"]

__version__ = "0.1.0"


def git_revision() -> str | None:
    """The git revision of the installed source tree, if it is a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
