# `make test` and `make demo` set themselves up on a fresh machine: a venv, the CPU build of
# torch first (so no dependency pulls a CUDA build), then the project with its dev extras.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export NUMBA_CACHE_DIR := $(CURDIR)/build/numba-cache

.PHONY: setup test test-fast smoke-wheel demo generate lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# The suite's kernels compile at LLVM -O1: the same code, 3-4x less compile time than numba's
# default -O3 (which users and benchmarks keep; -O0 would stop numba caching them), in a cache of
# their own so that no -O1 kernel ever serves the demo or a benchmark. worksteal: the long tests
# (numba compiles, torch.compile) leave no worker idle at the end.
test test-fast: export NUMBA_OPT := 1
test test-fast: export NUMBA_CACHE_DIR := $(CURDIR)/build/numba-cache-tests

# the whole suite, as CI runs it
test: setup
	$(PY) -m unfoldgen compile specs/ -o generated/ --check
	$(PY) -m ruff check unfoldgen tests benchmarks
	$(PY) -m pytest -q -n 2 --dist worksteal

# the edit loop (about 6 minutes on 2 cores, a third of the whole suite): ruff, and the suite without the tests marked slow
# (tests/conftest.py names them: trainings, studies, exports, long hypothesis runs)
test-fast: setup
	$(PY) -m ruff check unfoldgen tests benchmarks
	$(PY) -m pytest -q -n 2 --dist worksteal -m "not slow"

# the package a user installs: wheel → fresh venv without extras → compile, run, train, resume
smoke-wheel:
	PYTHON=$(PYTHON) TORCH=$(TORCH) .ci/smoke_wheel.sh

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
