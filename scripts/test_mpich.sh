#!/usr/bin/env bash
# The MPI tests again, under MPICH (PyPI's mpich, its Hydra mpiexec) instead of Open MPI: clusters run both
# families (Cray MPICH, Intel MPI and MVAPICH are MPICH's). Sets up .venv-mpich the first time
# (scripts/setup_mpich.sh). Extra arguments go to pytest. (The kept-posterior run, 1,019 trials, is the workers' GP
# logic, not MPI's: under Open MPI only, to keep the suite short.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_mpich.sh
.venv-mpich/bin/python -m pytest \
    tests/run/test_mpi.py tests/run/test_comm.py tests/run/test_startup.py tests/run/test_simulation.py \
    tests/run/test_two_nodes.py tests/run/test_bayes_run.py tests/test_api.py \
    "tests/results/test_resume.py::test_a_stop_signal_ends_the_job_resumably_and_resume_reruns_the_running_trials" \
    "tests/results/test_resume.py::test_a_second_signal_ends_the_job_at_once" \
    "tests/results/test_resume.py::test_an_objective_that_fails_to_import_on_one_worker_stops_every_rank" \
    --deselect "tests/run/test_bayes_run.py::test_under_mpirun_past_a_thousand_points_each_step_folds_into_the_posterior_kept_from_the_last" \
    "$@"
