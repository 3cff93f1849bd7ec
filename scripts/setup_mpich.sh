#!/usr/bin/env bash
# Create .venv-mpich: hpc_hpo (editable) with MPICH from PyPI instead of Open MPI, and pytest, for running the MPI
# tests under MPICH's launcher (scripts/test_mpich.sh). Safe to run again: it reinstalls only when setup.py changed.
# One MPI per environment: mpi4py loads whichever libmpi is installed beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv-mpich/bin/python ]; then
    "$PYTHON" -m venv .venv-mpich
fi
stamp=.venv-mpich/.hpc_hpo-installed
if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ]; then
    .venv-mpich/bin/python -m pip install --quiet --no-cache-dir --upgrade pip
    .venv-mpich/bin/python -m pip install --quiet --no-cache-dir -e '.[mpich]' 'pytest>=7' 'pytest-timeout>=2.1'
    touch "$stamp"
fi
