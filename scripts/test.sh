#!/usr/bin/env bash
# Set up (first time only), then run the test suite. Extra arguments go to pytest, e.g. scripts/test.sh -k mpi
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh
# setup.sh installed TensorFlow: its tests must run, not skip.
HPC_HPO_TEST_TF=1 .venv/bin/python -m pytest "$@"
