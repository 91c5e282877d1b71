"""What a model trained on: the record that keeps every score held out.

Every model file written by ``train``, ``adapt``, ``soup`` and ``baseline``
carries, in its header (key ``trained_on``), one entry per subject::

    {"subjects": {"subj01": {"store_identity": {...}, "splits": ["train"]}, ...}}

``store_identity`` is the identity of the store the subject's rows came from
(:meth:`~brainencoder.data.store.Store.identity`: data, image size, splits,
vertex space; no path) and ``splits`` the splits of that store whose responses
shaped the weights: the run's ``train_on``, joined with what its ``init_from``
model trained on, plus ``val`` where a selection (a greedy soup) used it.
``null`` means "unknown": a model started from a file that records nothing.

:func:`check_held_out` is the one rule every scoring route applies (evaluate,
compare, soup, submit's validation weights, the API): a model is never scored
on a split it trained on, and a model that records nothing is scored on val or
testval only when the user says ``--trust-splits``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..data.splits import SPLIT_NAMES
from ..models.modelfile import RECORD_KEY, read_metadata, record_metadata
from ..util.errors import CheckpointError, ConfigError, DataError

__all__ = [
    "RECORD_KEY",
    "add_subject_record",
    "check_held_out",
    "check_init_source",
    "inherit",
    "merge_records",
    "parse_record",
    "read_record",
    "record_metadata",
    "training_record",
]

HELD_OUT = ("val", "testval")  # the splits a score may be asked of that training can see
_IDENTITY_KEYS = ("fingerprint", "image_size", "splits", "space")
_MAX_SUBJECTS = 10_000
Record = dict[str, Any]


def _ordered(splits: Iterable[str]) -> list[str]:
    chosen = set(splits)
    return [s for s in SPLIT_NAMES if s in chosen]


def training_record(store: Any, subjects: Sequence[str], splits: Sequence[str]) -> Record:
    """The record of a model trained on ``splits`` of ``store`` for ``subjects``.

    Parameters
    ----------
    store : Store
        The store the rows came from.
    subjects : sequence of str
        The model's subjects trained on that store.
    splits : sequence of str
        Splits of the store whose responses trained the model (``train_on``).

    Returns
    -------
    dict
        ``{"subjects": {name: {"store_identity": ..., "splits": [...]}}}``.
    """
    identity = dict(store.identity())
    entry = {"store_identity": identity, "splits": _ordered(splits)}
    return {"subjects": {name: dict(entry) for name in subjects}}


def inherit(record: Record, base: Record | None) -> Record:
    """``record`` of a run started from a model whose record is ``base`` (``init_from``).

    A subject's splits join the base's when the base trained it on the same
    data with the same splits; on the same data with other splits every
    split may have been seen; on other data nothing changes; a base that
    records nothing (``None``) makes every subject unknown.
    """
    out: Record = {"subjects": {}}
    for name, entry in record["subjects"].items():
        entry = dict(entry)
        old = _entry(base, name) if base is not None else None
        if base is None or (old is not None and old["splits"] is None and _same_data(old, entry)):
            entry["splits"] = None
        elif old is not None and _same_data(old, entry) and entry["splits"] is not None:
            same_splits = old["store_identity"].get("splits") == entry["store_identity"]["splits"]
            seen = old["splits"] if same_splits else list(SPLIT_NAMES)
            entry["splits"] = _ordered([*entry["splits"], *seen])
        out["subjects"][name] = entry
    return out


def add_subject_record(base: Record | None, own: Record) -> Record:
    """``base`` with the subjects of ``own`` added or replaced (``adapt``).

    Subjects of a base that records nothing stay unrecorded (unknown).
    """
    out: Record = {"subjects": {}} if base is None else json.loads(json.dumps(base))
    out["subjects"].update(json.loads(json.dumps(own["subjects"])))
    return out


def merge_records(records: Sequence[Record | None], extra: Sequence[str] = ()) -> Record | None:
    """The record of a model averaged from others (a soup): every split any of them saw.

    Parameters
    ----------
    records : sequence of dict or None
        The ingredients' records (None: one records nothing, so the result is None).
    extra : sequence of str
        Splits the averaging itself used (``["val"]`` for a greedy soup).
    """
    if not records or any(r is None for r in records):
        return None
    out: Record = {"subjects": {}}
    for record in records:
        for name, entry in record["subjects"].items():
            have = out["subjects"].get(name)
            if have is None:
                out["subjects"][name] = {**entry, "splits": entry["splits"]}
                continue
            if have["splits"] is None or entry["splits"] is None or not _same_data(have, entry):
                have["splits"] = None
            else:
                have["splits"] = _ordered([*have["splits"], *entry["splits"]])
    for entry in out["subjects"].values():
        if entry["splits"] is not None:
            entry["splits"] = _ordered([*entry["splits"], *extra])
    return out


def parse_record(text: str, source: str | os.PathLike) -> Record:
    """Check a header's record (untrusted): its structure, keys and values.

    Raises
    ------
    CheckpointError
        One line naming ``source`` and what is wrong.
    """

    def bad(what: str) -> CheckpointError:
        return CheckpointError(
            f"{source}: damaged '{RECORD_KEY}' record in the model header ({what}); "
            "re-export the model from its run folder"
        )

    try:
        record = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise bad(f"not JSON: {exc}") from None
    subjects = record.get("subjects") if isinstance(record, dict) else None
    if not isinstance(subjects, dict) or len(subjects) > _MAX_SUBJECTS:
        raise bad("'subjects' must be a mapping of subject names")
    entries = list(subjects.items()) + ([("all", record["all"])] if "all" in record else [])
    for name, entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("store_identity"), dict):
            raise bad(f"subject {name!r} has no store identity")
        identity = entry["store_identity"]
        if not all(isinstance(identity.get(k), str) for k in _IDENTITY_KEYS):
            raise bad(f"subject {name!r}: store identity needs {list(_IDENTITY_KEYS)}")
        splits = entry.get("splits")
        if splits is not None and (
            not isinstance(splits, list) or not set(splits) <= set(SPLIT_NAMES)
        ):
            raise bad(f"subject {name!r}: splits must be a list of {list(SPLIT_NAMES)} or null")
    return record


def read_record(source: str | os.PathLike) -> Record | None:
    """The record of a run folder or model file; None where nothing is recorded.

    A run folder written before model files held records is read from its
    ``config.yaml`` (its store identity and ``train_on``; subjects ``adapt``
    added count as trained on train and val, as ``adapt`` then did).
    """
    from .locate import model_file

    path = Path(source)
    file = model_file(path)
    meta = read_metadata(file)
    if RECORD_KEY in meta:
        return parse_record(meta[RECORD_KEY], file)
    return _record_from_header(path) if path.is_dir() else None


def _record_from_header(run_dir: Path) -> Record | None:
    from .run import Run

    run = Run(run_dir)
    try:
        config, header = run.config, run.header
    except CheckpointError:
        return None
    identity = header.get("store_identity")
    if not isinstance(identity, dict):
        return None
    trained = config.get("train_on", ["train"])
    if config.get("split") == "all":  # a ridge baseline fitted on every training row
        trained = list(SPLIT_NAMES)
    splits = _ordered(trained) if isinstance(trained, list) else None
    record: Record = {"subjects": {}, "all": {"store_identity": identity, "splits": splits}}
    others = header.get("subject_stores")
    for name, rec in (others if isinstance(others, dict) else {}).items():
        if isinstance(rec, dict) and isinstance(rec.get("store_identity"), dict):
            entry = {"store_identity": rec["store_identity"], "splits": ["train", "val"]}
            record["subjects"][name] = entry
    return record


def _entry(record: Record | None, subject: str) -> dict | None:
    if record is None:
        return None
    return record["subjects"].get(subject) or record.get("all")


def _same_data(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return a["store_identity"].get("fingerprint") == b["store_identity"].get("fingerprint")


def _seen(entry: dict | None, identity: Mapping[str, str] | None, split: str) -> str | None:
    """Why ``split`` of a store of ``identity`` is not held out for ``entry`` (None: it is)."""
    if entry is None:
        return "records no training splits for it"
    if identity is not None and entry["store_identity"].get("fingerprint") != identity.get(
        "fingerprint"
    ):
        return None  # other data: none of its rows trained the model
    if identity is not None and entry["store_identity"].get("splits") != identity.get("splits"):
        return "was trained on other splits of the same data"
    if entry["splits"] is None:
        return "was started from a model that records no training splits"
    if split in entry["splits"]:
        return f"trained on the {split} images (splits: {entry['splits']})"
    return None


def check_held_out(
    source: str | os.PathLike,
    split: str,
    subjects: Sequence[tuple[str, Any]] | None = None,
    trust_splits: bool = False,
) -> None:
    """Refuse scoring a model on a split it trained on, or may have.

    Every command that scores, weights or selects runs on ``val`` or
    ``testval`` (evaluate, compare, submit's validation weights, soup, the
    API) calls this with the subjects it scores.

    Parameters
    ----------
    source : path
        Run folder or model file.
    split : str
        The split to score; only ``val`` and ``testval`` are checked.
    subjects : sequence of (str, Store), optional
        The subjects scored, each with the store it is scored on (default:
        every recorded subject, each on its recorded store).
    trust_splits : bool, default=False
        Score a model that records nothing (an older or foreign file) anyway;
        a record that says the split was trained on is still refused.

    Raises
    ------
    DataError
        Naming the model, the subject, the split and what to do.
    """
    if split not in HELD_OUT:
        return
    record = read_record(source)
    if record is None:
        if trust_splits:
            return
        raise DataError(
            f"{source} records no training splits (a file of an older brainencoder or of "
            f"another tool), so its {split} score may not be held out; score the test split, "
            "or pass --trust-splits (in Python: trust_splits) if you know it never trained on "
            f"these {split} images"
        )
    if subjects is None:
        pairs = [(name, None) for name in record["subjects"]]
        pairs += [("every subject", None)] if "all" in record or not pairs else []
    else:
        identities: dict[int, Mapping[str, str]] = {}  # one hash of each store's arrays
        for _, st in subjects:
            if st is not None and id(st) not in identities:
                identities[id(st)] = st.identity()
        pairs = [(name, None if st is None else identities[id(st)]) for name, st in subjects]
    for name, identity in pairs:
        entry = _entry(record, name)
        why = _seen(entry, identity, split)
        if why is None or (trust_splits and (entry is None or entry["splits"] is None)):
            continue
        other = "the testval or test split" if split == "val" else "the test split"
        trust = "" if entry is not None and entry["splits"] is not None else ", or --trust-splits"
        raise DataError(
            f"{source}: {name} {why}, so its {split} score would not be held out; use a run "
            f"trained on train only, or {other}{trust}"
        )


def check_init_source(source: str | os.PathLike, store: Any, selects_on_val: bool) -> Record | None:
    """The record of an ``init_from`` model; refused where it saw the rows used to select epochs.

    Raises
    ------
    ConfigError
        The initial model trained on ``store``'s val images (or on other
        splits of its data) while this run picks its best epoch on val.
    """
    record = read_record(source)
    if record is None or not selects_on_val:
        return record
    identity = store.identity()
    for name in store.names:
        why = _seen(_entry(record, name), identity, "val")
        if why is not None and _entry(record, name) is not None:
            if _entry(record, name)["splits"] is None:
                continue  # unknown: evaluate refuses its val score later; nothing to name here
            raise ConfigError(
                f"init_from {source}: {name} {why}, so this run's epoch selection on val "
                "would not be held out; train with train_on: [train, val] (no epoch "
                "selection), or start from a model trained on train only"
            )
    return record
