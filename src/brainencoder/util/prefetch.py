"""Overlap preparing the next batches (decoding, reading, cropping) with the model."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["available_cpus", "prefetch"]

T = TypeVar("T")
R = TypeVar("R")


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def prefetch(fn: Callable[[T], R], items: Iterable[T], workers: int = 2) -> Iterator[R]:
    """``map(fn, items)`` in order, computed up to ``workers + 1`` items ahead in threads.

    Image decoding (Pillow releases the GIL) and store reads then overlap with
    the trunk's forward on the current batch.

    Parameters
    ----------
    fn : callable
    items : iterable
    workers : int, default=2
        Threads; 0 computes in the caller's thread.
    """
    if workers <= 0:
        yield from map(fn, items)
        return
    pool = ThreadPoolExecutor(workers)
    try:
        pending = []
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > workers:
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()
    finally:  # an error (a corrupt image) or an early stop drops the queued work
        pool.shutdown(wait=True, cancel_futures=True)
