"""Which layers of a trunk to read, and which of its parameters to freeze, by name.

:func:`resolve_layers` turns a layer specification (indices, or fnmatch globs
on the names of a model's ``feature_info``) into sorted indices;
:func:`apply_freeze` sets ``requires_grad`` of the parameters whose names
match globs. Both refuse what matches nothing, listing the names there are.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence

from torch import nn

from ..util.errors import ConfigError

__all__ = ["LayerSpec", "apply_freeze", "resolve_layers"]

LayerSpec = Sequence[int] | str | Sequence[str]


def resolve_layers(module_names: Sequence[str], layers: LayerSpec) -> list[int]:
    """Turn a layer specification into sorted indices of ``module_names``.

    Parameters
    ----------
    module_names : sequence of str
        Names of the model's feature layers (``[f["module"] for f in model.feature_info]``).
    layers : sequence of int, str or sequence of str
        Indices (negative allowed), or fnmatch globs on the names.

    Returns
    -------
    list of int
    """
    n = len(module_names)
    if isinstance(layers, str):
        layers = [layers]
    layers = list(layers)
    if not layers:
        raise ConfigError("'layers' is empty; choose at least one trunk layer")
    indices: set[int] = set()
    for item in layers:
        if isinstance(item, bool) or not isinstance(item, int | str):
            raise ConfigError(f"'layers' items must be int or str; got {item!r}")
        if isinstance(item, int):
            if not -n <= item < n:
                raise ConfigError(
                    f"layer index {item} is out of range for a trunk with {n} "
                    f"feature layers ({', '.join(module_names)})"
                )
            indices.add(item % n)
        else:
            hits = [i for i, m in enumerate(module_names) if fnmatch.fnmatchcase(m, item)]
            if not hits:
                raise ConfigError(
                    f"layer pattern {item!r} matches no trunk layer; layers are "
                    f"{', '.join(module_names)}"
                )
            indices.update(hits)
    return sorted(indices)


def apply_freeze(
    module: nn.Module, patterns: Iterable[str], requires_grad: bool = False
) -> list[str]:
    """Set ``requires_grad`` of parameters whose names match any fnmatch pattern.

    Parameters
    ----------
    module : nn.Module
    patterns : iterable of str
        fnmatch globs on parameter names (``"blocks*norm*"``).
    requires_grad : bool, default=False
        The value given to matching parameters.

    Returns
    -------
    list of str
        Names of the parameters that matched.

    Raises
    ------
    ConfigError
        If a pattern matches no parameter (a typo must not be a silent no-op).
    """
    names = [n for n, _ in module.named_parameters()]
    matched: set[str] = set()
    for pattern in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            sample = ", ".join(names[:8])
            raise ConfigError(
                f"freeze pattern {pattern!r} matches no parameter (names look like: {sample}, ...)"
            )
        matched.update(hits)
    for name, param in module.named_parameters():
        if name in matched:
            param.requires_grad_(requires_grad)
    return sorted(matched)
