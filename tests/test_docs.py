"""The documentation's shape: a short README that links every page, a site that lists them.

``make docs`` builds the site with warnings as errors (broken links, anchors and
docstrings included); these checks hold without mkdocs installed.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.glob("**/*.md"))
README_MAX_LINES = 250

_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _links(text: str) -> list[str]:
    """Targets of Markdown links and images, without their #anchor."""
    return [target.split("#")[0] for target in _LINK.findall(text)]


def _nav_pages(nav) -> list[str]:
    """Every page named in mkdocs.yml's nav, however nested."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [p for value in nav.values() for p in _nav_pages(value)]
    return [p for item in nav for p in _nav_pages(item)]


def test_the_pages_are_there():
    expected = {
        "index.md",
        "quickstart.md",
        "workflow.md",
        "concepts.md",
        "experiments.md",
        "performance.md",
        "troubleshooting.md",
        "api.md",
    }
    assert expected <= set(PAGES), sorted(expected - set(PAGES))


def test_the_readme_is_short_and_links_every_page():
    text = (ROOT / "README.md").read_text()
    lines = text.splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"
    # the two commands come first, right after the opening paragraph
    first_block = text.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert [line.split()[:2] for line in first_block] == [["make", "demo"], ["make", "test"]]
    linked = set(_links(text))
    missing = [page for page in PAGES if f"docs/{page}" not in linked]
    assert not missing, f"README.md does not link {missing}"
    broken = [t for t in linked if t.startswith("docs/") and not (ROOT / t).exists()]
    assert not broken, broken


def test_the_nav_lists_every_page():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = _nav_pages(config["nav"])
    assert sorted(nav) == PAGES, (sorted(set(PAGES) - set(nav)), sorted(set(nav) - set(PAGES)))
    assert len(nav) == len(set(nav)), "a page is listed twice"
    assert config["strict"] is True and config["validation"]["anchors"] == "warn"
    options = config["plugins"][1]["mkdocstrings"]["handlers"]["python"]["options"]
    assert options["docstring_style"] == "numpy"


def test_pages_link_existing_pages_and_images():
    problems = []
    for page in PAGES:
        path = DOCS / page
        for target in _links(path.read_text()):
            if not target or "://" in target:
                continue
            if not (path.parent / target).is_file():
                problems.append(f"docs/{page}: {target}")
    assert not problems, problems


def test_the_api_reference_names_existing_objects():
    """Each ``::: dotted.name`` of the pages is a module, class or function that exists
    (mkdocstrings reads them statically; a renamed module would break the build)."""
    names = [
        name
        for page in PAGES
        for name in re.findall(r"^::: ([\w.]+)\s*$", (DOCS / page).read_text(), re.M)
    ]
    api = {n for n in names if n.startswith("brainencoder.api.")}
    import brainencoder

    public = {f"brainencoder.api.{n}" for n in brainencoder.__all__ if n != "__version__"}
    assert public <= api, sorted(public - api)
    for name in names:
        parts = name.split(".")
        for split in range(len(parts), 0, -1):  # the longest importable module
            try:
                obj = importlib.import_module(".".join(parts[:split]))
            except ModuleNotFoundError:
                continue
            for attr in parts[split:]:
                assert hasattr(obj, attr), f"{name}: no {attr!r}"
                obj = getattr(obj, attr)
            break
        else:
            raise AssertionError(f"{name}: no such module")
