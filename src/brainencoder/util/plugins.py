"""Plugins: modules the user names, imported so that they register components.

A plugin is an ordinary Python module that registers readouts, losses, ridge
solvers or trunk families with the public decorators
(:func:`~brainencoder.models.readouts.register_readout`, ...). It is named in
the training config (``plugins: [my_readouts]``) or on the command line
(``--plugin my_readouts``), and imported before the config is checked, so
``model.readout.name: mine`` can name what it registers.

Only modules the user names are imported: never one named inside a model file
or a run folder, which may come from anyone. A model file whose readout is not
registered says which ``--plugin`` to pass instead.

The working directory is never put on ``sys.path``: a tool run inside an
unpacked download must not import that folder's ``pandas.py`` or
``safetensors.py`` in place of the installed module. A plugin that no
installed module provides is loaded from the working directory by its file
(``my_readouts.py``, or the package folder ``mypackage/``) and nothing else
there is importable.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import re
import sys
from collections.abc import Sequence
from types import ModuleType

from .errors import ConfigError

__all__ = ["check_plugin_names", "load_plugins"]

_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def check_plugin_names(names: Sequence[str], key: str = "plugins") -> list[str]:
    """Check that ``names`` is a list of module names (``pkg.module``), not paths.

    Parameters
    ----------
    names : list of str
    key : str, default="plugins"
        The config key, as messages name it.

    Returns
    -------
    list of str

    Raises
    ------
    ConfigError
        For anything but a list of dotted module names.
    """
    if isinstance(names, str) or not isinstance(names, list | tuple):
        raise ConfigError(f"'{key}' must be a list of module names; got {names!r}")
    for i, name in enumerate(names):
        if isinstance(name, str) and name.endswith(".py"):
            raise ConfigError(
                f"'{key}[{i}]' names a file; name the module instead: "
                f"{name.removesuffix('.py').rsplit('/', 1)[-1]!r}"
            )
        if not isinstance(name, str) or not _MODULE.match(name):
            raise ConfigError(
                f"'{key}[{i}]' must be an importable module name such as my_readouts "
                f"or mypackage.readouts (not a file path); got {name!r}"
            )
    return list(names)


def _import_from_working_directory(name: str) -> None:
    """Load the top-level module of ``name`` from the working directory, by its file.

    Only when no installed module (nothing on ``sys.path``) has that name:
    installed modules win, and the folder is not put on ``sys.path``, so no
    other file there can shadow a module that brainencoder imports later.
    """
    top = name.split(".")[0]
    if top in sys.modules or importlib.util.find_spec(top) is not None:
        return
    spec = importlib.machinery.PathFinder.find_spec(top, [os.getcwd()])
    if spec is None or spec.loader is None or spec.origin is None:
        return  # not there either (or a bare folder): the import below names it
    module = importlib.util.module_from_spec(spec)
    sys.modules[top] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(top, None)
        raise


def load_plugins(names: Sequence[str]) -> list[ModuleType]:
    """Import the named modules (each once), so that they register their components.

    Installed modules come first; a name that none provides is loaded from the
    working directory by its file (``my_readouts.py`` next to the user's data
    needs no installation), without putting that folder on ``sys.path``. Without
    names nothing happens, ``sys.path`` included.

    Parameters
    ----------
    names : sequence of str
        Module names (``my_readouts``, ``mypackage.readouts``), as the user
        gave them: a config's ``plugins`` or ``--plugin`` options.

    Returns
    -------
    list of module
        The imported modules, in the order named.

    Raises
    ------
    ConfigError
        ``plugin 'name' could not be imported (<error>)``, on one line, for a
        name that is not a module name or a module whose import fails.
    """
    names = check_plugin_names(names)
    modules = []
    for name in names:
        try:
            _import_from_working_directory(name)
            modules.append(importlib.import_module(name))
        except Exception as exc:
            detail = " ".join(f"{type(exc).__name__}: {exc}".split())
            raise ConfigError(f"plugin {name!r} could not be imported ({detail})") from exc
    return modules
