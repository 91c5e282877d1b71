"""Which store each subject of a run comes from, and checking a given store against them.

A run's header records the store it was trained on (``store``, ``store_identity``)
and, for subjects whose data come from another store (a subject added by
``adapt``), one record each under ``subject_stores``. Scoring a subject on a
store other than its own would use other splits (its training images could
be scored as test images), so every command that takes a run and a store goes
through :func:`subject_stores`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..data.store import Store
from ..util.errors import CheckpointError
from .header import read_header

__all__ = ["identity_differences", "recorded_stores", "store_record", "subject_stores"]

_FIELDS = {
    "fingerprint": "data",
    "image_size": "image size",
    "splits": "splits",
    "space": "vertex space",
}


def store_record(store: Store | Mapping[str, Any], path: str | os.PathLike | None = None) -> dict:
    """``{"store": absolute path, "store_identity": ...}`` of ``store`` (or a copied record).

    Parameters
    ----------
    store : Store or mapping
        A store, or a record read from another run's header (copied as it is).
    path : path, optional
        Where the store will be, when it is not where it is now (a store
        inside a run folder written aside).
    """
    if isinstance(store, Mapping):
        return {"store": store.get("store"), "store_identity": store.get("store_identity")}
    return {"store": str(Path(path or store.path).absolute()), "store_identity": store.identity()}


def identity_differences(recorded: Mapping[str, Any] | None, store: Store) -> list[str]:
    """What differs between a recorded identity and ``store`` ("data", "splits", ...)."""
    if not isinstance(recorded, Mapping):
        return []  # written before stores had an identity: nothing to compare
    actual = store.identity()
    return [label for key, label in _FIELDS.items() if recorded.get(key) != actual[key]]


def _records(header: Mapping[str, Any]) -> tuple[dict | None, dict[str, dict]]:
    main = None
    if isinstance(header.get("store"), str):
        main = {"store": header["store"], "store_identity": header.get("store_identity")}
    others = header.get("subject_stores")
    others = others if isinstance(others, dict) else {}
    own = {
        name: rec
        for name, rec in others.items()
        if isinstance(name, str) and isinstance(rec, dict) and isinstance(rec.get("store"), str)
    }
    return main, own


def recorded_stores(run: str | os.PathLike) -> tuple[dict | None, dict[str, dict]]:
    """The store records of a run: its training store and its subjects' own (``adapt``).

    A run adapted from this one keeps them, so ``evaluate`` scores every old
    subject on the store (and splits) it was trained on, and the new subject on
    its own. A bare model file records none.

    Returns
    -------
    (record or None, dict of subject to record)
    """
    run = Path(run)
    if not run.is_dir():
        return None, {}
    try:
        header = read_header(run)
    except CheckpointError:
        return None, {}
    main, own = _records(header)
    return (store_record(main) if main else None), {k: store_record(v) for k, v in own.items()}


def _open(record: Mapping[str, Any], run_path: Path, what: str) -> Store:
    path = Path(record["store"])
    if not path.exists():
        raise CheckpointError(
            f"{run_path}: the store {what} came from, {path}, is gone (moved or deleted); "
            "pass --store NEW_PATH"
        )
    store = Store(path)
    differs = identity_differences(record.get("store_identity"), store)
    if differs:
        raise CheckpointError(
            f"{path} is not the store {run_path} recorded for {what} (other "
            f"{', '.join(differs)}); prepare it again or pass --store"
        )
    return store


def subject_stores(
    run_path: str | os.PathLike,
    header: Mapping[str, Any],
    subjects: Sequence[str],
    store: Store | None = None,
) -> list[tuple[str, Store]]:
    """The model's subjects to score, each with the store its data come from.

    Parameters
    ----------
    run_path : path
        The run (for messages).
    header : mapping
        The run's header (``run:`` block of ``config.yaml``; empty for a bare model file).
    subjects : sequence of str
        The model's subjects.
    store : Store, optional
        A store the user named: only the subjects whose recorded store it is
        (or, for a run with nothing recorded, every model subject it holds).
        Default: every subject from its own recorded store.

    Returns
    -------
    list of (subject, Store)
        In the model's subject order.

    Raises
    ------
    CheckpointError
        The named store is none of the run's (one line naming what differs),
        or a recorded store is gone or changed.
    """
    run_path = Path(run_path)
    main, own = _records(header)
    pairs: list[tuple[str, Store]] = []
    if store is None:
        if main is None and not own:
            raise CheckpointError(f"{run_path}: no store recorded; pass --store")
        opened = _open(main, run_path, "its training subjects") if main is not None else None
        for name in subjects:
            if name in own:
                pairs.append((name, _open(own[name], run_path, name)))
            elif opened is not None and name in opened.names:
                pairs.append((name, opened))
        return pairs
    if main is not None and not identity_differences(main.get("store_identity"), store):
        served = [n for n in subjects if n not in own and n in store.names]
    else:
        served = [
            n
            for n, rec in own.items()
            if n in subjects
            and n in store.names
            and not identity_differences(rec.get("store_identity"), store)
        ]
        if not served and main is None and not own:  # a bare model file: nothing recorded
            served = [n for n in subjects if n in store.names]
        if not served:
            differs = identity_differences(main.get("store_identity"), store) if main else []
            detail = f" (other {', '.join(differs)})" if differs else ""
            raise CheckpointError(
                f"{store.path} is not the store {run_path} was trained on{detail}; its numbers "
                "would be wrong. Pass the run's store with --store"
            )
    return [(n, store) for n in subjects if n in served]
