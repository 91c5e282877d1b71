"""A griffe extension for the API reference: Sphinx roles in docstrings as code spans.

The docstrings are numpydoc and cite other objects with Sphinx roles
(``:class:`~brainencoder.core.space.GroupSpace```), which Markdown would show
as written. Each becomes a code span of the name (``GroupSpace`` for ``~``,
the full path otherwise) before mkdocstrings parses the docstring. Loaded by
mkdocs.yml (``extensions``) when ``make docs`` builds the site; it reads the
source, it imports nothing of the package.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|data|exc|obj|const):`(~?)([^`]+)`")


def replace_roles(text: str) -> str:
    """``:class:`~a.b.C``` -> ```C```; ``:func:`a.f``` -> ```a.f```."""

    def code(match: re.Match) -> str:
        short, target = match.groups()
        return f"`{target.rsplit('.', 1)[-1] if short else target}`"

    return _ROLE.sub(code, text)


class SphinxRoles(Extension):
    """Rewrites the roles of every docstring as griffe loads each object."""

    def on_instance(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = replace_roles(obj.docstring.value)
