# `make test` and `make demo` set themselves up on a fresh machine: a venv, the CPU build of
# torch first (so no dependency pulls a CUDA build), then the project with its dev extras.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export NUMBA_CACHE_DIR := $(CURDIR)/build/numba-cache

.PHONY: setup test demo generate lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(PY) -m unfoldgen compile specs/ -o generated/ --check
	$(PY) -m ruff check unfoldgen tests benchmarks
	$(PY) -m pytest -q

demo: setup
	$(PY) -m unfoldgen compile specs/ -o generated/
	$(PY) benchmarks/demo.py

generate: setup
	$(PY) -m unfoldgen compile specs/ -o generated/

lint: setup
	$(PY) -m ruff check unfoldgen tests benchmarks
	$(PY) -m ruff format --check unfoldgen tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache demo_out
