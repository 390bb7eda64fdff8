# nucstudy: set-up, the main job, tests, the book.
# `make study` sets everything up and runs the main job; `make test` sets up and runs the tests.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# --isolated: install from PyPI only, ignoring any local pip configuration or CPU-only torch
# wheel that would pair a torch build with a torchvision it cannot load.
PIP_INSTALL ?= $(PY) -m pip install --isolated --disable-pip-version-check
# The main job's data: synthetic (the embedded default), consep:<folder> or conic:<folder>.
DATA ?= synthetic

.PHONY: setup study test lint book benchmarks clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

study: setup
	$(PY) -m nucstudy.study --data $(DATA)

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff format --check nucstudy tests benchmarks notebooks
	$(VENV)/bin/ruff check nucstudy tests benchmarks notebooks

book: setup
	$(VENV)/bin/jupyter-book build . --warningiserror

# Speed figures on this machine's CPU (on a GPU: benchmarks/models.py --out .../models_gpu.json).
benchmarks: setup
	$(PY) benchmarks/data.py --out results/benchmarks/data_cpu.json
	$(PY) benchmarks/models.py --out results/benchmarks/models_cpu.json
	$(PY) benchmarks/metrics.py --out results/benchmarks/metrics_cpu.json
	$(PY) benchmarks/postprocess.py --out results/benchmarks/postprocess_cpu.json

clean:
	rm -rf _build .pytest_cache .hypothesis
