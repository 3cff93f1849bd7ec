#!/bin/bash
# hpc_hpo search on PBS: 2 node(s), 9 MPI ranks: the master on the first node, one worker per GPU (2 x 4).
# Made by: python -m hpc_hpo jobscript --scheduler pbs --nodes 2 --gpus-per-node 4 --time 12:00:00 experiment.toml
# Submit once with `qsub THIS_FILE`: each job queues the next one (at most HPC_HPO_MAX_JOBS, default
# 10) until the search is complete; `python -m hpc_hpo status RESULTS` shows how it stands.
# PBS sends no signal before the walltime: hpc_hpo reads PBS_WALLTIME and stops 120 s before it.
#PBS -N hpc_hpo
#PBS -l select=1:ncpus=5:ngpus=4:mpiprocs=5+1:ncpus=4:ngpus=4:mpiprocs=4
#PBS -l walltime=12:00:00
#PBS -j oe

# Your site's environment (uncomment and adapt):
# module load openmpi cuda python
# source "$HOME/venvs/hpc_hpo/bin/activate"

set -u
cd "${PBS_O_WORKDIR:-.}" || exit 2
CHAIN=${HPC_HPO_CHAIN:-1}
MAX_JOBS=${HPC_HPO_MAX_JOBS:-10}
SCRIPT=${HPC_HPO_JOBSCRIPT:-$0}  # the batch system's copy of this script, readable while the job runs

# Queue the next job first, to start once this one ends however it ends (killed at the walltime too).
NEXT=""
if [ "$CHAIN" -lt "$MAX_JOBS" ]; then
    NEXT=$(qsub -W depend="afterany:$PBS_JOBID" \
        -v "HPC_HPO_CHAIN=$((CHAIN + 1)),HPC_HPO_MAX_JOBS=$MAX_JOBS" "$SCRIPT") || NEXT=""
fi
echo "hpc_hpo job $PBS_JOBID: $CHAIN of at most $MAX_JOBS; next job: ${NEXT:-none}"

# The run: exit 0 = the search is complete, 3 = stopped at the time limit or a signal (resumable).
mpiexec -n 9 --hostfile "$PBS_NODEFILE" python -m hpc_hpo run experiment.toml --resume --time-margin 120 &
RUN=$!
trap 'echo "hpc_hpo job: stop signal: ending the run; the next job resumes it"; kill -USR1 "$RUN"' USR1 TERM
CODE=0
wait "$RUN" || CODE=$?
while kill -0 "$RUN" 2>/dev/null; do  # wait returns early when the trap ran: wait for the run itself
    CODE=0
    wait "$RUN" || CODE=$?
done
case "$CODE" in
    0) echo "hpc_hpo job: the search is complete"; [ -n "$NEXT" ] && qdel "$NEXT" ;;
    3) if [ -n "$NEXT" ]; then echo "hpc_hpo job: stopped early; job $NEXT resumes the search"
       else echo "hpc_hpo job: stopped early; no job follows (HPC_HPO_MAX_JOBS reached): submit again to go on"; fi ;;
    *) echo "hpc_hpo job: the run failed with exit code $CODE; no job follows"; [ -n "$NEXT" ] && qdel "$NEXT" ;;
esac
exit "$CODE"
