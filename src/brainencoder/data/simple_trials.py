"""The trial table of a simple-layout subject, ``trials.csv`` (see :mod:`.simple_layout`).

One line per trial, with a header naming the columns (any order)::

    image,row,split,session,image_id
    img-0001.png,0,train,1,13
    img-0001.png,1,train,2,13
    img-0900.png,2,test,1,845

``image`` and ``row`` are required; ``split`` (``train`` / ``test``),
``session`` and ``image_id`` are optional.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .problems import Problem

__all__ = ["TRIAL_COLUMNS", "Trials", "read_trials"]

TRIAL_COLUMNS = ("image", "row", "split", "session", "image_id")
_REQUIRED = ("image", "row")
_SHOWN = 3  # offending lines quoted per problem
_MESSAGES = {
    "absent": "trials name images that are not in {where}",
    "row": "'row' must be a response row (an integer >= 0)",
    "split": "'split' must be 'train' or 'test'",
    "both": "an image is marked both 'train' and 'test'; each image belongs to one split",
    "id": "'image_id' must be an integer >= 0",
    "two ids": "an image has two different image_id values",
}


@dataclass
class Trials:
    """The parsed trial table of one subject.

    Attributes
    ----------
    keys : list of str
        The distinct images, in order of first appearance (file names, or array rows as text).
    test : ndarray of bool, shape (n_images,)
    ids : ndarray of int64, shape (n_images,)
        The ``image_id`` column (-1 where the table has none).
    ids_given : bool
    image : ndarray of int64, shape (n_trials,)
        Index into ``keys`` of each trial.
    row : ndarray of int64, shape (n_trials,)
    session : list of str, length n_trials
    """

    keys: list[str]
    test: np.ndarray
    ids: np.ndarray
    ids_given: bool
    image: np.ndarray
    row: np.ndarray
    session: list[str]


def _load(path: Path, problems: list[Problem]) -> tuple[list[str], list[list[str]]] | None:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # a BOM (Excel) is not a name
            table = [[v.strip() for v in line] for line in csv.reader(fh) if line]
    except FileNotFoundError:
        problems.append(Problem(path, "trial table not found"))
        return None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        problems.append(Problem(path, f"cannot read this CSV file ({exc})"))
        return None
    header, raw = (table[0], table[1:]) if table else ([], [])
    missing = [c for c in _REQUIRED if c not in header]
    if missing:
        problems.append(
            Problem(
                path,
                f"missing column(s) {missing}; the header must name "
                f"image,row[,split][,session][,image_id] (found {header})",
            )
        )
        return None
    if not raw:
        problems.append(Problem(path, "no trials (the table has a header only)"))
        return None
    extra = [c for c in header if c not in TRIAL_COLUMNS]
    if extra:
        problems.append(Problem(path, f"unknown column(s) {extra} are ignored", blocking=False))
    return header, raw


def _image_key(text: str, names: int | set[str]) -> str | None:
    """The image a trial names: a file of the folder, or a row of the array (as text)."""
    if isinstance(names, int):
        return str(int(text)) if text.isdigit() and int(text) < names else None
    return text if text in names else None


def read_trials(path: Path, names: int | set[str], problems: list[Problem]) -> Trials | None:
    """Parse ``trials.csv``; each kind of bad line is one problem quoting the first lines.

    Parameters
    ----------
    path : Path
        The subject's ``trials.csv``.
    names : int or set of str
        The image array's length, or the file names of the image folder.
    problems : list of Problem
        Appended to.

    Returns
    -------
    Trials or None
        None when a blocking problem was found.
    """
    loaded = _load(path, problems)
    if loaded is None:
        return None
    header, raw = loaded
    col = {c: header.index(c) for c in TRIAL_COLUMNS if c in header}
    bad: dict[str, list[str]] = {}
    images: dict[str, int] = {}
    trial_image, rows, sessions = [], [], []
    split_of: dict[int, str] = {}
    id_of: dict[int, int] = {}
    for number, values in enumerate(raw, start=2):
        cell = {c: values[i] if i < len(values) else "" for c, i in col.items()}
        key = _image_key(cell["image"], names)
        if key is None:
            bad.setdefault("absent", []).append(f"line {number}: {cell['image']!r}")
            continue
        index = images.setdefault(key, len(images))
        if not cell["row"].isdigit():
            bad.setdefault("row", []).append(f"line {number}: {cell['row']!r}")
        split = cell.get("split") or "train"
        if split not in ("train", "test"):
            bad.setdefault("split", []).append(f"line {number}: {split!r}")
        elif split_of.setdefault(index, split) != split:
            bad.setdefault("both", []).append(f"line {number}: {key!r}")
        if "image_id" in col:
            given = cell["image_id"]
            if not given.isdigit():
                bad.setdefault("id", []).append(f"line {number}: {given!r}")
            elif id_of.setdefault(index, int(given)) != int(given):
                bad.setdefault("two ids", []).append(f"line {number}: {key!r}")
        trial_image.append(index)
        rows.append(int(cell["row"]) if cell["row"].isdigit() else -1)
        sessions.append(cell.get("session", ""))
    where = "images/" if not isinstance(names, int) else f"the image array (rows 0..{names - 1})"
    for kind, lines in bad.items():
        quoted = "; ".join(lines[:_SHOWN]) + (
            f" ... ({len(lines)} in all)" if len(lines) > 3 else ""
        )
        message = _MESSAGES[kind].format(where=where)
        problems.append(Problem(path, f"{len(lines)} line(s): {message} ({quoted})"))
    row_array = np.array(rows, dtype=np.int64)
    counts = np.bincount(row_array[row_array >= 0]) if rows else np.zeros(0, dtype=np.int64)
    if (counts > 1).any():
        dup = np.flatnonzero(counts > 1)[:5].tolist()
        problems.append(
            Problem(
                path, f"response rows used by two or more trials: {dup}; each trial has its own"
            )
        )
    if len(set(id_of.values())) < len(id_of):
        problems.append(Problem(path, "two images share an image_id; an id names one picture"))
    if bad or (counts > 1).any() or len(set(id_of.values())) < len(id_of):
        return None
    keys = list(images)
    test = np.array([split_of[i] == "test" for i in range(len(keys))], dtype=bool)
    if test.all():
        problems.append(Problem(path, "no training images (every trial is split 'test')"))
        return None
    if not test.any():
        problems.append(
            Problem(
                path,
                "no test images (split 'test'); 'submit' and 'evaluate --split test' need them",
                blocking=False,
            )
        )
    ids = np.array([id_of.get(i, -1) for i in range(len(keys))], dtype=np.int64)
    return Trials(
        keys,
        test,
        ids,
        "image_id" in col,
        np.array(trial_image, dtype=np.int64),
        row_array,
        sessions,
    )
