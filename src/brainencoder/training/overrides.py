"""Configuration overrides: ``key=value`` strings (the command line) or a mapping (Python).

Both give the same nested mapping, which :func:`~brainencoder.training.config.load_config`
merges over the defaults and the YAML file before the one typed check of every
key, so a mistake reads the same wherever it was made.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from ..util.errors import ConfigError

__all__ = ["merge_config", "nest_overrides", "parse_overrides", "read_overrides"]


def _put(out: dict[str, Any], key: str, value: Any, item: str) -> None:
    """Set dotted ``key`` of ``out`` to ``value``; ``item`` names the override in errors."""
    target = out
    *parents, last = key.split(".")
    for depth, parent in enumerate(parents):
        target = target.setdefault(parent, {})
        if not isinstance(target, dict):
            where = ".".join(parents[: depth + 1])
            raise ConfigError(f"override {item!r}: '{where}' is already set to a value")
    target[last] = value


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["lr=1e-3", "model.img_size=64"]`` -> ``{"lr": 0.001, "model": {"img_size": 64}}``.

    Values are parsed as YAML scalars/lists (``true``, ``[0, 2]``, ``null``); a
    later item wins over an earlier one.

    Parameters
    ----------
    items : sequence of str
        ``key=value`` strings; nested keys with dots (``model.readout.dropout=0.5``).

    Returns
    -------
    dict
        The nested mapping.

    Examples
    --------
    >>> parse_overrides(["model.readout.name=point", "epochs=2"])
    {'model': {'readout': {'name': 'point'}}, 'epochs': 2}
    """
    out: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"override {item!r} must be a string that looks like key=value")
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: cannot parse value ({exc})") from None
        _put(out, key, value, item)
    return out


def _plain(value: Any) -> Any:
    """A Python value as YAML would hold it: paths as text, tuples as lists; a copy."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def nest_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``{"lr": 1e-3, "model.readout.name": "point"}`` -> the nested mapping.

    Keys are dotted as on the command line; values are taken as they are (not
    parsed from text), paths as text and tuples as lists, so the mapping reads
    as the ``key=value`` strings would.

    Parameters
    ----------
    overrides : mapping of str to Any
        Dotted keys, nested mappings or both (``{"model": {"readout": {...}}}``).

    Returns
    -------
    dict
        The nested mapping (a copy: the argument is never changed).

    Examples
    --------
    >>> nest_overrides({"lr": 1e-3, "model.readout.name": "point"})
    {'lr': 0.001, 'model': {'readout': {'name': 'point'}}}
    """
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"override key {key!r} must be a dotted name (model.readout.name)")
        _put(out, key, _plain(value), f"{key}={value!r}")
    return out


def read_overrides(overrides: Mapping[str, Any] | Sequence[str] | None) -> dict[str, Any]:
    """A mapping or ``key=value`` strings (or None: none) as the nested mapping.

    Parameters
    ----------
    overrides : mapping, sequence of str or None
        See :func:`nest_overrides` and :func:`parse_overrides`.

    Returns
    -------
    dict

    Examples
    --------
    >>> read_overrides(["model.dropout=0.5"]) == read_overrides({"model": {"dropout": 0.5}})
    True
    """
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        return nest_overrides(overrides)
    if isinstance(overrides, str | bytes):
        raise ConfigError(
            f"overrides must be a mapping or a list of key=value strings; got the text "
            f"{overrides!r} (write [{overrides!r}])"
        )
    return parse_overrides(overrides)


def merge_config(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` merged into ``base`` key by key; naming another readout or loss replaces it.

    ``model.readout.dropout=0.5`` changes one option of the file's readout, but
    ``model.readout={name: grouplin_seq, ...}`` over a file's ``point`` starts from
    the new readout's own defaults (the file's options belong to the other one).
    """
    merged = dict(base)
    for key, value in update.items():
        old = merged.get(key)
        other = isinstance(old, dict) and isinstance(value, dict) and "name" in value
        other = other and value.get("name") != old.get("name")
        if isinstance(value, dict) and isinstance(old, dict) and not other:
            merged[key] = merge_config(old, value)
        else:
            merged[key] = value
    return merged
