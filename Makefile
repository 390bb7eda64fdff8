# nucstudy: set-up, the main job, tests, the book.
# `make study` sets everything up and runs the main job; `make test` sets up and runs the tests.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# --isolated: install from PyPI only, ignoring any local pip configuration or CPU-only torch
# wheel that would pair a torch build with a torchvision it cannot load.
PIP_INSTALL ?= $(PY) -m pip install --isolated --disable-pip-version-check
CONSEP ?=

.PHONY: setup study test lint book benchmarks clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

study: setup
	$(PY) -m nucstudy.study $(if $(CONSEP),--consep $(CONSEP))

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff format --check nucstudy tests benchmarks
	$(VENV)/bin/ruff check nucstudy tests benchmarks

book: setup
	$(VENV)/bin/jupyter-book build . --warningiserror

benchmarks: setup
	$(PY) benchmarks/data.py

clean:
	rm -rf _build .pytest_cache .hypothesis
