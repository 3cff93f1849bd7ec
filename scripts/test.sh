#!/usr/bin/env bash
# Set up (first time only), then run the test suite. Extra arguments go to pytest, e.g. scripts/test.sh -k mpi
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh
.venv/bin/python -m pytest "$@"
