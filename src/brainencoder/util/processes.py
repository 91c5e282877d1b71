"""Worker processes that never outlive the command that started them.

:func:`worker_pool` is a :class:`~concurrent.futures.ProcessPoolExecutor`
whose workers leave signals to the command (SIGTERM ends them quietly, Ctrl-C
is the command's to handle) and end when the command ends, even when it is
killed outright (SIGKILL runs no code in the command, so the kernel is asked
to kill each worker with its parent). :func:`stop_workers_on_signal` turns a
SIGTERM of the command into ``KeyboardInterrupt`` and ends the workers with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

__all__ = ["stop_workers_on_signal", "worker_pool"]

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _parent_gone(parent: int, ppid: int) -> bool:
    """Whether the command ``parent`` has ended (or this worker was reparented)."""
    if os.getppid() != ppid:
        return True
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return False


def _watch_parent(parent: int, ppid: int) -> None:
    while not _parent_gone(parent, ppid):
        time.sleep(0.5)
    os._exit(1)


def _init_worker(parent: int) -> None:
    """Worker initializer: default SIGTERM, no SIGINT, end with ``parent``.

    SIGTERM gets its default action: the command ends its workers with it, and
    a handler inherited from the command (raising ``KeyboardInterrupt``) would
    print a traceback in each of them. Ctrl-C, which the terminal sends to
    every process of the group, is ignored: the command ends its workers. On
    Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` ends the worker with its parent;
    where that is not available, or the worker's parent is not the command
    itself (a fork server), a thread watches the command's pid.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ppid = os.getppid()
    if ppid == parent and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
        if armed:
            if os.getppid() != parent:  # the parent ended before the request took effect
                os._exit(1)
            return
    threading.Thread(target=_watch_parent, args=(parent, ppid), daemon=True).start()


def worker_pool(max_workers: int | None = None) -> ProcessPoolExecutor:
    """A process pool whose workers end with this process (see the module docstring)."""
    return ProcessPoolExecutor(
        max_workers=max_workers or os.cpu_count(),
        initializer=_init_worker,
        initargs=(os.getpid(),),
    )


@contextlib.contextmanager
def stop_workers_on_signal(pool: ProcessPoolExecutor, what: str) -> Iterator[None]:
    """SIGTERM or Ctrl-C ends the pool's workers too, not only this process.

    SIGTERM becomes ``KeyboardInterrupt("SIGTERM: <what> stopped; rerun to
    resume")`` (the command line prints it in one line); any exception ends the
    workers at once and cancels what they had not started.
    """

    def handle(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"{signal.Signals(signum).name}: {what} stopped; rerun to resume")

    old = None
    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        old = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    except BaseException:
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
