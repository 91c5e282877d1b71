# Two entry points for a fresh machine:
#   make demo   set up .venv, then run the end-to-end demo on a synthetic dataset
#   make test   set up .venv, then lint and run the full test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= demo-output

.PHONY: install browser demo test test-fast lint format bench clean

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

# Debian's chromium renders the HTML report in one test; where it cannot be
# installed (no root, no apt) that single test is skipped with a reason.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || \
	    echo "chromium could not be installed: the report browser test will be skipped"; }

# the float-equivalence tests run again with torch's portable kernels and one thread:
# another summation order, as on another CPU (a tolerance that only holds here fails)
test: lint browser
	$(PY) -m pytest
	ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1 $(PY) -m pytest -m numerics -q

# the edit loop: everything but the few end-to-end tests marked slow (~1.5 min here)
test-fast: install
	$(PY) -m pytest -m "not slow"

format: install
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

clean:
	rm -rf $(DEMO_DIR) .pytest_cache build dist src/*.egg-info
