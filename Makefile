# Two entry points for a fresh machine:
#   make demo   set up .venv, then run the end-to-end demo on a synthetic dataset
#   make test   set up .venv, then lint, build the docs and run the full test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= demo-output

.PHONY: install browser demo docs test test-fast lint format bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/brainencoder demo $(DEMO_DIR)

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

# the documentation site (mkdocs.yml, docs/) into site/; every warning is an error:
# a broken link or anchor, a docstring mkdocstrings cannot parse (no --quiet: it hides
# the warnings, and --strict then passes)
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# Debian's chromium renders the HTML report in one test; where it cannot be
# installed (no root, no apt) that single test is skipped with a reason.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || \
	    echo "chromium could not be installed: the report browser test will be skipped"; }

# the float-equivalence tests run again with torch's portable kernels and one thread:
# another summation order, as on another CPU (a tolerance that only holds here fails)
test: lint docs browser
	$(PY) -m pytest
	ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1 $(PY) -m pytest -m numerics -q

# the edit loop: everything but the few end-to-end tests marked slow (~1.5 min here)
test-fast: install
	$(PY) -m pytest -m "not slow"

format: install
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

clean:
	rm -rf $(DEMO_DIR) .pytest_cache build dist site src/*.egg-info
