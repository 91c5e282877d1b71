"""``python -m brainencoder`` (also what ``torchrun -m brainencoder`` runs).

Python's ``-m`` puts the working folder first on ``sys.path``; a tool run
inside an unpacked download must not import a ``pandas.py`` lying there, so
that entry is dropped before anything else is imported (plugins the user names
are loaded from the working folder by file: :mod:`brainencoder.util.plugins`).
"""

from __future__ import annotations

import os
import sys

if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from .cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
