#!/usr/bin/env bash
# Set up (first time only), then run the test suite. Extra arguments go to pytest, e.g. scripts/test.sh -k mpi
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# MPICH in a virtual environment of its own: the MPI tests run again under it, and the SLURM test of srun uses it.
scripts/setup_mpich.sh
# The job-script tests run a real one-node SLURM and shellcheck, the report's tests headless Chromium:
# Debian packages (needs root the first time).
scripts/debian_packages.sh
source scripts/env.sh
# The documentation must build without a warning: a broken link or a page missing from mkdocs.yml fails here.
site=$(mktemp -d)
.venv/bin/mkdocs build --strict --quiet --site-dir "$site"
rm -rf "$site"
# TensorFlow, SLURM and Chromium are installed: their tests must run, not skip; as root, so must the
# tests that mount a small file system (a disk that fills up mid-run).
root=0
[ "$(id -u)" = "0" ] && root=1
HPC_HPO_TEST_TF=1 HPC_HPO_TEST_SLURM=1 HPC_HPO_TEST_BROWSER=1 HPC_HPO_TEST_ROOT=$root .venv/bin/python -m pytest "$@"
# The MPI tests once more under MPICH (its own virtual environment), unless HPC_HPO_TEST_MPICH=0.
if [ "${HPC_HPO_TEST_MPICH:-1}" != "0" ]; then
    HPC_HPO_TEST_SLURM=1 scripts/test_mpich.sh -q
fi
