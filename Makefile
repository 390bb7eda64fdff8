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
CONSEP ?= ../shared/data/consep256
# Wheels a GPU machine without PyPI lacks for the GPU study (albumentations and its needs),
# at the versions .venv has, for that machine's Python.
GPU_PYTHON ?= 3.12
GPU_WHEELS := albumentations albucore pydantic pydantic_core annotated-types typing-inspection \
	stringzilla simsimd

.PHONY: setup study test lint book benchmarks gpu-study gpu-bundle clean

# Every dependency at the exact version of requirements.lock (Linux x86_64, Python 3.11;
# regenerate it as README says), then the package itself. One line per phase; pip's own
# output goes to $(VENV)/setup.log and is shown only when a phase fails.
SETUP_LOG := $(VENV)/setup.log
QUIETLY = >> $(SETUP_LOG) 2>&1 || { tail -n 30 $(SETUP_LOG); echo "setup failed: see $(SETUP_LOG)"; exit 1; }

$(VENV)/.installed: pyproject.toml requirements.lock
	@echo "setup: creating $(VENV) (pip's log: $(SETUP_LOG))"
	@$(PYTHON) -m venv $(VENV) && : > $(SETUP_LOG)
	@$(PIP_INSTALL) --upgrade pip $(QUIETLY)
	@echo "setup: installing the locked dependencies (requirements.lock)"
	@$(PIP_INSTALL) -r requirements.lock $(QUIETLY)
	@echo "setup: installing nucstudy (editable)"
	@$(PIP_INSTALL) --no-deps -e . $(QUIETLY)
	@touch $@

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

# The GPU study on one CUDA GPU (about 10 minutes): the paper's protocol on CoNSeP for the
# full model, the ablations (three seeds where time allows) and the Table I baselines, then
# the pages and the book.
gpu-study: setup
	$(PY) -m nucstudy.study.gpu_study --data consep:$(CONSEP)

# For a GPU machine that reaches no registry and has no ../shared: CoNSeP into .data/ and
# the wheels into .whl/ (both git-ignored); there, run scripts/gpu_study_offline.sh.
gpu-bundle: setup
	mkdir -p .data .whl
	rm -rf .data/consep256 && cp -r $(CONSEP) .data/consep256
	$(PY) -m pip download --isolated -q --no-deps --only-binary=:all: -d .whl \
		--python-version $(GPU_PYTHON) --implementation cp --platform manylinux_2_28_x86_64 \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		$$($(PY) -m pip list --format=freeze 2>/dev/null | grep -iE "^($$(echo $(GPU_WHEELS) | tr ' ' '|'))==")

clean:
	rm -rf _build .pytest_cache .hypothesis
