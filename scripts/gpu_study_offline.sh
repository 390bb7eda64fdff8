#!/usr/bin/env bash
# The GPU study on a GPU machine that reaches no package registry (after `make gpu-bundle`
# here): installs the carried wheels beside that machine's torch, runs the study on the
# carried CoNSeP without the book (no papermill there), and packs the registry folder, less
# its checkpoints, into $OUT (or here). Back here: unpack it at the repository root and run
# `python -m nucstudy.study.gpu_study --pages-only --data consep:.data/consep256` for the pages
# and the book.
# Usage: scripts/gpu_study_offline.sh [gpu_study options, e.g. --minutes 8]
# Environment: PYTHON (default python3), REGISTRY (default results/runs/consep-gpu),
# SKIP_WHEELS=1 to use the packages already installed (a check on this machine).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
REGISTRY=${REGISTRY:-results/runs/consep-gpu}
if [ -z "${SKIP_WHEELS:-}" ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/nucstudy-site .whl/*.whl
  export PYTHONPATH=/tmp/nucstudy-site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
"$PYTHON" -m nucstudy.study.gpu_study --data consep:.data/consep256 --out "$REGISTRY" --no-book "$@"
tar czf "${OUT:-.}/consep-gpu.tar.gz" --exclude=checkpoints "$REGISTRY"
echo "packed ${OUT:-.}/consep-gpu.tar.gz"
