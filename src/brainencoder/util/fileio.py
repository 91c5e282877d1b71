"""Atomic writes and safe reading of files that may come from untrusted sources.

Every output of brainencoder is written to a temporary file in the target
directory and moved into place with :func:`os.replace`, so a reader never sees
a half-written file.
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import pickle
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BrainEncoderError, DataError, UnsafeFileError

__all__ = [
    "atomic_path",
    "check_free_space",
    "load_mapping",
    "read_json",
    "read_yaml_mapping",
    "save_mapping",
    "save_npy_atomic",
    "write_bytes_atomic",
    "write_json_atomic",
]


def _umask() -> int:
    """The process umask, read without changing it where the system allows.

    Linux shows it in ``/proc/self/status``; elsewhere it can only be read by
    setting it (``os.umask``) and putting it back, which is done under a lock
    (another thread creating a file in between would see 0o077's mode at worst).
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


_UMASK_LOCK = threading.Lock()

_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def _write_error(exc: BaseException, path: Path, tmp: Path) -> OSError | None:
    """``exc`` as an OSError naming ``path`` (not the temporary file), or None.

    A failed write raises OSError naming the temporary file, or, from the
    safetensors writer, a ``SafetensorError`` that only holds the OS error in
    its text (``I/O error: No space left on device (os error 28)``). Both
    become ``OSError(errno, strerror, path)``, which the command line prints
    as one line ("PATH: the disk is full; ...").
    """
    if isinstance(exc, OSError) and exc.errno is not None:
        if exc.filename not in (None, str(tmp), tmp):
            return None  # about another file: leave it as it is
        code = exc.errno
    elif type(exc).__name__ == "SafetensorError" and (m := _OS_ERROR.search(str(exc))):
        code = int(m[1])
    else:
        return None
    return OSError(code, os.strerror(code), str(path))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it to ``path`` on success.

    On an exception the temporary file is removed and ``path`` is untouched.
    Temporary files of an earlier writer of ``path`` that was killed are
    removed first (one writer per target is assumed). The file gets the mode
    a plain ``open`` would give it (0o666 less the umask), not mkstemp's
    0o600. An OS error of the write (a full disk) is raised as an OSError
    naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp{glob.escape(suffix)}"):
        stale.unlink(missing_ok=True)  # left by a writer that was killed
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # set after writing: a writer may replace the file (safetensors writes a temporary
        # file of its own, 0600, and renames it onto tmp_path)
        os.chmod(tmp_path, 0o666 & ~_umask())
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except Exception as exc:
        error = _write_error(exc, path, tmp_path)
        if error is None:
            raise
        raise error from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Read a JSON file, turning a missing or corrupt file into a clear error."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{what} {path} is not valid JSON ({exc}); remove or regenerate it"
        ) from None


_YAML_LIMIT = 1 << 20


def read_yaml_mapping(path: str | os.PathLike, what: str = "YAML file") -> dict[str, Any]:
    """Read a small YAML mapping safely: bounded size, no aliases, no tags that run code.

    Aliases (``&a`` / ``*a``) are refused, so a crafted file cannot expand to
    gigabytes ("billion laughs"); files over 1 MiB are refused too.

    Raises
    ------
    DataError
        Naming the file: missing, too large, not YAML, aliases, not a mapping.
    """
    import yaml

    class _NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.YAMLError(f"aliases are not allowed (line {event.start_mark.line + 1})")
            return super().compose_node(parent, index)

    path = Path(path)
    try:
        if path.stat().st_size > _YAML_LIMIT:
            raise DataError(f"{path}: {what} is larger than 1 MiB; not a config")
        text = path.read_text()
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read this {what} ({exc})") from None
    try:
        data = yaml.load(text, Loader=_NoAliasLoader)
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: invalid {what} ({exc}); fix or regenerate it") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a mapping of keys in this {what}")
    return data


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    """Save ``array`` in ``.npy`` format (no pickles) to ``path`` atomically."""
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, np.asarray(array), allow_pickle=False)


def check_free_space(directory: str | os.PathLike, needed_bytes: int, what: str) -> None:
    """Raise a clear error if ``directory`` lacks ``needed_bytes`` of free space.

    Parameters
    ----------
    directory : path
        Where the data will be written (the nearest existing parent is checked).
    needed_bytes : int
        Bytes that will be written.
    what : str
        Description used in the message, e.g. ``"the prepared store"``.
    """
    directory = Path(directory).absolute()
    while not directory.exists():
        directory = directory.parent
    free = shutil.disk_usage(directory).free
    if needed_bytes > free:
        raise BrainEncoderError(
            f"not enough disk space for {what}: it needs {needed_bytes / 2**30:.2f} GiB but "
            f"{directory} has {free / 2**30:.2f} GiB free; free some space or choose another "
            "location"
        )


# ----------------------------------------------------------------------------- safe pickles

_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


class _ForbiddenGlobalError(pickle.UnpicklingError):
    """A pickle asked for a global outside the allowed set."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy globals needed for an object array."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise _ForbiddenGlobalError(f"global '{module}.{name}' is not allowed")


def _unwrap(obj: Any) -> Any:
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        return obj.item()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def load_mapping(path: str | os.PathLike) -> dict[int, str]:
    """Read an ROI mapping file (a pickled ``{int: str}`` dict) without running code.

    The challenge ships these as ``.npy`` files holding a pickled 0-d object
    array (written by ``np.save(path, dict)``). The pickle stream is read with
    an unpickler that only resolves the numpy globals needed to rebuild such an
    array; any other global (``os.system``, ``builtins.eval``, ...) is refused
    before it can be called.

    Parameters
    ----------
    path : path
        A ``mapping_<group>.npy`` file (or a plain pickle of a dict).

    Returns
    -------
    mapping : dict of int to str
        ROI label value to ROI name, e.g. ``{0: 'Unknown', 1: 'V1v'}``.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: mapping file not found") from None
    stream = io.BytesIO(raw)
    if raw.startswith(b"\x93NUMPY"):
        try:
            version = np.lib.format.read_magic(stream)
            header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = header(stream)
        except ValueError as exc:
            raise DataError(f"{path}: corrupt .npy header ({exc})") from None
        if not dtype.hasobject:
            raise DataError(
                f"{path}: expected a pickled dict of int -> str, found a {dtype} array "
                f"of shape {shape}"
            )
    try:
        obj = _RestrictedUnpickler(stream).load()
    except _ForbiddenGlobalError as exc:
        raise UnsafeFileError(
            f"{path}: refusing to load this mapping file: {exc}. A mapping file must hold "
            "only a dict of int -> str; replace it with the file from the official download"
        ) from None
    except Exception as exc:  # truncated or garbage streams raise many types
        raise DataError(
            f"{path}: cannot parse mapping file ({type(exc).__name__}: {exc})"
        ) from None
    obj = _unwrap(obj)
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict of int -> str, got {type(obj).__name__}")
    mapping: dict[int, str] = {}
    for key, value in obj.items():
        key, value = _unwrap(key), _unwrap(value)
        if not isinstance(key, int) or isinstance(key, bool) or not isinstance(value, str):
            raise DataError(
                f"{path}: expected a dict of int -> str, found entry {key!r}: {value!r}"
            )
        mapping[key] = value
    return mapping


def save_mapping(path: str | os.PathLike, mapping: dict[int, str]) -> None:
    """Write an ROI mapping file in the challenge's format, atomically.

    The challenge ships ``np.save(path, dict)`` files, i.e. a pickled 0-d
    object array; this writes the same format so files made here read like
    the official ones. Only a validated dict of int -> str is pickled, so the
    file holds nothing but numpy's array reconstruction and that dict, which
    :func:`load_mapping` accepts.
    """
    if not all(isinstance(k, int) and isinstance(v, str) for k, v in mapping.items()):
        raise ValueError(f"a mapping must be a dict of int -> str; got {mapping!r}")
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, np.array(dict(mapping), dtype=object), allow_pickle=True)
