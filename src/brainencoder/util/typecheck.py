"""Typed checking of configuration mappings against dataclasses.

One place turns a plain mapping (from YAML, ``key=value`` overrides or a model
file's header) into a dataclass instance: unknown keys are errors listing the
valid ones, values are coerced only where that is lossless (an int for a
float, YAML 1.1's ``"3e-3"`` string for a float), and every message names the
full dotted key (``'model.readout.hidden_dim' must be int; got 'abc'``).
Numbers must be finite. The bounds that configs and model files' headers
share (:data:`MAX_IMAGE_SIZE`, :data:`MAX_TRUNK_INT`, a seed's range) and
their checks are here too.
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

__all__ = [
    "MAX_IMAGE_SIZE",
    "MAX_SEED",
    "MAX_TRUNK_INT",
    "check_int_range",
    "check_numbers",
    "check_seed",
    "check_trunk_kwargs",
    "check_type",
    "from_mapping",
]

T = TypeVar("T")


def _describe(annotation: Any) -> str:
    if annotation is type(None):
        return "None"
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(annotation))
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _shown(value: Any, limit: int = 200) -> str:
    """``repr(value)``, cut to ``limit`` characters (a crafted file's value may be huge)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        raise ConfigError(f"'{key}' must be {_describe(annotation)}; got {_shown(value)}")
    if origin is typing.Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            raise ConfigError(f"'{key}' must be one of {list(allowed)}; got {_shown(value)}")
        return value
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"'{key}' must be a list; got {_shown(value)}")
        (item,) = typing.get_args(annotation) or (Any,)
        return [check_type(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if origin is dict or annotation is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{key}' must be a mapping; got {_shown(value)}")
        return dict(value)
    if annotation is Any:
        return value
    if annotation is float and isinstance(value, str):  # YAML 1.1 reads "3e-3" as a string
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"'{key}' must be float; got {_shown(value)}") from None
    if annotation in (int, float) and isinstance(value, bool):
        raise ConfigError(f"'{key}' must be {annotation.__name__}; got {_shown(value)}")
    if annotation is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, annotation):
        raise ConfigError(f"'{key}' must be {_describe(annotation)}; got {_shown(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"'{key}' must be a finite number; got {_shown(value)}")
    return value


#: the largest seed: numpy's legacy ``np.random.seed`` (which ``train`` also sets, for user
#: code) takes 32 bits; torch and numpy's SeedSequence take more
MAX_SEED = 2**32 - 1


#: the largest image side: ``prepare --image-size``, a model's ``img_size`` and input size
MAX_IMAGE_SIZE = 1024
#: the largest integer (size, depth, count) a trunk's keyword arguments may hold
MAX_TRUNK_INT = 1 << 20


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


def check_int_range(key: str, value: Any, low: int, high: int) -> int:
    """``value`` as an int in [``low``, ``high``]; ConfigError naming ``key`` otherwise.

    Parameters
    ----------
    key : str
        Dotted name used in the message.
    value : Any
    low, high : int
        Inclusive bounds.

    Returns
    -------
    int
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"'{key}' must be an integer in [{low}, {high}]; got {_shown(value)}")
    if not low <= int(value) <= high:
        raise ConfigError(f"'{key}' must be in [{low}, {high}]; got {_shown(value)}")
    return int(value)


def check_numbers(key: str, value: Any, length: int, positive: bool = False) -> list[float]:
    """``value`` as exactly ``length`` finite numbers (each > 0 when ``positive``).

    The one check of an image normalisation (``mean``, ``std``), so a config
    and a model file's header are held to the same rule.

    Parameters
    ----------
    key : str
        Dotted name used in the message.
    value : Any
    length : int
    positive : bool, default=False

    Returns
    -------
    list of float

    Raises
    ------
    ConfigError
        ``'model.trunk_kwargs.std' must be 3 finite numbers > 0; got [0, 0, 0]``.
    """
    ok = isinstance(value, list | tuple) and len(value) == length
    for v in value if ok else ():
        real = isinstance(v, numbers.Real) and not isinstance(v, bool)
        ok = ok and real and math.isfinite(v) and (v > 0 or not positive)
    if not ok:
        more = " > 0" if positive else ""
        raise ConfigError(f"'{key}' must be {length} finite numbers{more}; got {_shown(value)}")
    return [float(v) for v in value]


def check_trunk_kwargs(prefix: str, options: Mapping[str, Any]) -> None:
    """Check a trunk's keyword arguments before any builder sees them.

    Where given (None counts as not given), ``mean`` and ``std`` (the image
    normalisation) must be 3 finite numbers, ``std`` above 0, and
    ``input_size`` an image side in [8, :data:`MAX_IMAGE_SIZE`]. Every integer,
    at any depth (a Hugging Face ``config``), must be within
    :data:`MAX_TRUNK_INT` of 0: builders make lists and layers of such counts
    before any parameter exists.

    Parameters
    ----------
    prefix : str
        Dotted prefix of the keys in messages (``"model.trunk_kwargs."``).
    options : mapping

    Raises
    ------
    ConfigError
        Naming the key.
    """
    for key in ("mean", "std"):
        if options.get(key) is not None:
            check_numbers(f"{prefix}{key}", options[key], 3, positive=key == "std")
    if options.get("input_size") is not None:
        check_int_range(f"{prefix}input_size", options["input_size"], 8, MAX_IMAGE_SIZE)
    stack: list[tuple[str, Any]] = [(prefix.rstrip("."), dict(options))]
    while stack:
        key, value = stack.pop()
        if isinstance(value, Mapping):
            stack.extend((f"{key}.{k}", v) for k, v in value.items())
        elif isinstance(value, list | tuple):
            stack.extend((f"{key}[{i}]", v) for i, v in enumerate(value))
        elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
            check_int_range(key, value, -MAX_TRUNK_INT, MAX_TRUNK_INT)


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
