"""HTML pages from jinja2 templates with autoescaping."""

from __future__ import annotations

from typing import Any

__all__ = ["render_page"]


def render_page(template: str, **context: Any) -> bytes:
    """An HTML page from a jinja2 template with autoescaping (every value is escaped).

    Parameters
    ----------
    template : str
        The jinja2 template text.
    **context
        The template's values; a name the template uses but is not given is an error.

    Returns
    -------
    bytes
        The page, UTF-8 encoded.
    """
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(template).render(**context).encode()
