"""One registry for every pluggable kind: readouts, losses, ridge solvers, trunk families.

A :class:`Registry` maps names to objects (classes or functions), as timm's
model registry does::

    SOLVERS = Registry("ridge solver")

    @SOLVERS.register("ols")
    def ols(X, Y, alphas, n_folds): ...

    SOLVERS.get("ols")      # the function
    SOLVERS.get("olls")     # ConfigError: unknown ridge solver 'olls'; available: ['ols']

Names are registered once: a second registration under a taken name is an
error naming what holds it, so a plugin cannot silently replace a built-in.
Registering is the only thing a module should do when it is imported.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, overload

from .errors import ConfigError

__all__ = ["Registry"]

T = TypeVar("T")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


def _describe(obj: Any) -> str:
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None)
    return f"{module}.{name}" if module and name else repr(obj)


class Registry(Generic[T]):
    """Names -> objects of one kind; unknown names are errors listing the valid ones.

    Parameters
    ----------
    kind : str
        What is registered, as messages name it (``"readout"``, ``"loss"``).

    Examples
    --------
    >>> losses = Registry("loss")
    >>> @losses.register("l1")
    ... def l1(a, b):
    ...     return abs(a - b)
    >>> losses.names(), "l1" in losses, losses.get("l1")(1, 3)
    (['l1'], True, 2)
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T) -> T: ...

    def register(self, name: str, obj: Any = None) -> Any:
        """Register ``obj`` as ``name``; without ``obj``, a decorator that does.

        Parameters
        ----------
        name : str
            Starts with a letter; letters, digits, ``_``, ``-`` and ``.`` follow.
        obj : object, optional
            What to register. Omitted: returns a decorator registering its
            argument and returning it unchanged.

        Returns
        -------
        object or callable
            ``obj``, or the decorator.

        Raises
        ------
        ConfigError
            If ``name`` is not a valid name or is already registered.
        """
        if obj is None:
            return lambda target: self.register(name, target)
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(
                f"{self.kind} name {name!r} is not valid: use letters, digits, '_', '-' "
                "or '.', starting with a letter"
            )
        if name in self._entries:
            raise ConfigError(
                f"{self.kind} {name!r} is already registered (by "
                f"{_describe(self._entries[name])}); choose another name"
            )
        self._entries[name] = obj
        return obj

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return what it held (for tests and interactive sessions)."""
        self.get(name)
        return self._entries.pop(name)

    def get(self, name: str) -> T:
        """The object registered as ``name``.

        Raises
        ------
        ConfigError
            ``unknown <kind> 'name'; available: [...]``.
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ConfigError(f"unknown {self.kind} {name!r}; available: {self.names()}") from None

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._entries
        except TypeError:  # an unhashable "name" (a list from a config) is not registered
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
