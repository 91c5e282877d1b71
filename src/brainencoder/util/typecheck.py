"""Typed checking of configuration mappings against dataclasses.

One place turns a plain mapping (from YAML, ``key=value`` overrides or a model
file's header) into a dataclass instance: unknown keys are errors listing the
valid ones, values are coerced only where that is lossless (an int for a
float, YAML 1.1's ``"3e-3"`` string for a float), and every message names the
full dotted key (``'model.readout.hidden_dim' must be int; got 'abc'``).
Numbers must be finite.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from .errors import ConfigError

__all__ = ["MAX_SEED", "check_seed", "check_type", "from_mapping"]

T = TypeVar("T")


def _describe(annotation: Any) -> str:
    if annotation is type(None):
        return "None"
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(annotation))
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def check_type(key: str, value: Any, annotation: Any) -> Any:
    """Coerce ``value`` to ``annotation`` where lossless; raise ConfigError otherwise.

    Parameters
    ----------
    key : str
        Dotted name used in messages.
    value : Any
    annotation : type or typing construct
        ``int``, ``float``, ``str``, ``bool``, ``list[...]``, ``dict[...]``,
        unions (``int | None``), ``Literal[...]`` or ``Any``.
    """
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return check_type(key, value, option)
            except ConfigError:
                continue
        raise ConfigError(f"'{key}' must be {_describe(annotation)}; got {value!r}")
    if origin is typing.Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            raise ConfigError(f"'{key}' must be one of {list(allowed)}; got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"'{key}' must be a list; got {value!r}")
        (item,) = typing.get_args(annotation) or (Any,)
        return [check_type(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if origin is dict or annotation is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{key}' must be a mapping; got {value!r}")
        return dict(value)
    if annotation is Any:
        return value
    if annotation is float and isinstance(value, str):  # YAML 1.1 reads "3e-3" as a string
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"'{key}' must be float; got {value!r}") from None
    if annotation in (int, float) and isinstance(value, bool):
        raise ConfigError(f"'{key}' must be {annotation.__name__}; got {value!r}")
    if annotation is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, annotation):
        raise ConfigError(f"'{key}' must be {_describe(annotation)}; got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"'{key}' must be a finite number; got {value!r}")
    return value


#: the largest seed: numpy's legacy ``np.random.seed`` (which ``train`` also sets, for user
#: code) takes 32 bits; torch and numpy's SeedSequence take more
MAX_SEED = 2**32 - 1


def check_seed(key: str, value: Any) -> int:
    """``value`` as a seed: an int in [0, 2**32 - 1]; ConfigError naming ``key`` otherwise.

    The one check of every seed (``train``'s ``seed`` and ``pca_seed``,
    ``adapt --seed``, ``pca --seed``), so a seed that a random generator
    would refuse deep inside a run is refused before any work.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"'{key}' must be an integer in [0, {MAX_SEED}]; got {value!r}")
    if not 0 <= int(value) <= MAX_SEED:
        raise ConfigError(
            f"'{key}' must be in [0, {MAX_SEED}] (2**32 - 1, the range every random generator "
            f"used here accepts); got {value}: choose a smaller seed"
        )
    return int(value)


def from_mapping(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, checking keys and types.

    Parameters
    ----------
    cls : dataclass type
        Missing keys take the dataclass defaults. If it defines ``validate()``,
        that is called on the result.
    data : mapping
    prefix : str, default=""
        Dotted prefix of the keys in messages (``"model."``).

    Raises
    ------
    ConfigError
        Unknown key (listing the valid ones) or ill-typed value (naming the key).
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"'{prefix.rstrip('.') or 'config'}' must be a mapping; got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        shown = [f"{prefix}{k}" for k in unknown]
        raise ConfigError(f"unknown key(s) {shown}; valid: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values = {k: check_type(f"{prefix}{k}", v, hints[k]) for k, v in data.items()}
    obj = cls(**values)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj
