#!/usr/bin/env bash
# Set up (first time only), then run the built-in default experiment (a Keras MLP on the digits data)
# on 9 ranks: 1 master + 8 workers.
# Extra arguments go to `hpc_hpo run`, e.g. scripts/demo.sh --trials 50
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh
# --oversubscribe: 9 ranks may be more than this machine has cores.
.venv/bin/mpirun -n 9 --oversubscribe .venv/bin/python -m hpc_hpo run --overwrite "$@"
.venv/bin/python -m hpc_hpo status digits_mlp.h5
.venv/bin/python -m hpc_hpo report digits_mlp.h5   # plots and digits_mlp-report/report.html
