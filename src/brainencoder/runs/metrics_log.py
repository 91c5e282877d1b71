"""A run's ``metrics.jsonl``: one JSON record per logged step and per epoch."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..util.fileio import write_bytes_atomic

__all__ = ["append", "read", "truncate"]

logger = logging.getLogger(__name__)


def append(path: Path, record: Mapping[str, Any]) -> None:
    """Append ``record`` as one line, flushed to disk (a kill loses at most this line).

    A write that fails (a full disk) is cut back to the file's previous end, so no
    half-written line is left before the error propagates.
    """
    data = memoryview((json.dumps(dict(record)) + "\n").encode())
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        start = os.fstat(fd).st_size
        try:
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)


def truncate(path: Path, step: int) -> None:
    """Drop records logged after ``step`` (a resumed run logs them again)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if isinstance(record, dict) and record.get("step", 0) <= step:
            keep.append(line)
    write_bytes_atomic(path, "".join(f"{x}\n" for x in keep).encode())


def read(path: Path) -> list[dict[str, Any]]:
    """The records of ``path``; cut or damaged lines are skipped with a warning."""
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            logger.warning("%s line %d: cut or damaged record skipped", path, number)
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
