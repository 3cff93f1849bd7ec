"""Batch job scripts for SLURM and PBS: ``python -m hpc_hpo jobscript``.

A script runs ``hpc_hpo run CONFIG --resume`` on one rank per GPU plus the master, and keeps
a search going across as many jobs as it needs: at its start it queues its successor with a
dependency ("after this job ends, however it ends"), so even a job killed at its time limit
is followed; when the search is complete, or fails for a reason another job would not fix,
it cancels that successor. At most ``max_jobs`` jobs form the chain.

Time limits: hpc_hpo reads the job's end (SLURM: ``squeue``; PBS: ``PBS_WALLTIME``) and hands
out no trial that would not end before it, less ``--time-margin``. SLURM also sends SIGUSR1
``signal_lead`` seconds before the end (``--signal=B:USR1@...``), which the script passes on
to the run: a backstop for trials that take longer than the ones before them.

Layout: every node gets exactly one worker per GPU, the first one the master besides. SLURM is
asked for ``--ntasks-per-node`` = GPUs + 1 on every node (``--ntasks`` alone would let it pack 8
ranks on the first node and 1 on the second, sharing 4 GPUs and leaving 3 idle); the launcher
starts ``nodes x GPUs + 1`` ranks filling nodes in order (``mpirun``'s default mapping by slot,
``srun --distribution=block``), so the last task slot of each later node stays empty. PBS gets
the same from ``select`` chunks with ``mpiprocs`` GPUs + 1 on the first node and GPUs on the others.

``jobscripts/slurm.sbatch`` and ``jobscripts/pbs.sh`` in the repository are this module's
output for 2 nodes of 4 GPUs (a test keeps them so).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from ..errors import ConfigError
from .walltime import parse_duration

SCHEDULERS = ("slurm", "pbs")
LAUNCHERS = ("mpirun", "srun", "mpiexec")
_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")


@dataclass(frozen=True)
class JobShape:
    """What the script asks the batch system for, and how it runs the search."""

    scheduler: str
    config: str
    nodes: int = 1
    gpus_per_node: int = 4
    workers: int = 1  # per node, on nodes without GPUs (gpus_per_node = 0)
    time: str = "12:00:00"
    gpus_per_trial: int = 1
    launcher: str = ""  # default: mpirun (SLURM), mpiexec (PBS)
    launcher_args: str = ""
    max_jobs: int = 10
    job_name: str = "hpc_hpo"
    signal_lead: int = 300  # seconds: SLURM's SIGUSR1 before the time limit
    time_margin: int = 120  # seconds: hpc_hpo's own margin before the end
    python: str = "python"

    @property
    def ranks(self) -> int:
        """One rank per GPU (or ``workers`` per node without GPUs), plus the master on the first node."""
        return self.nodes * self.per_node + 1

    @property
    def per_node(self) -> int:
        """Workers per node: one per GPU, or ``workers`` on nodes without GPUs."""
        return self.gpus_per_node or self.workers

    @property
    def command(self) -> str:
        launcher = self.launcher or ("mpirun" if self.scheduler == "slurm" else "mpiexec")
        args = f" {self.launcher_args}" if self.launcher_args else ""
        if launcher == "srun":
            head = f"srun -n {self.ranks} --distribution=block --kill-on-bad-exit=1{args}"
        elif self.scheduler == "pbs":
            head = f"{launcher} -n {self.ranks} --hostfile \"$PBS_NODEFILE\"{args}"
        else:
            head = f"{launcher} -n {self.ranks}{args}"
        return (f"{head} {self.python} -m hpc_hpo run {shlex.quote(self.config)} --resume "
                f"--time-margin {self.time_margin}")


def check_shape(shape: JobShape) -> JobShape:
    """Bad values are bad input: one line naming the flag, the rule and the value."""
    if shape.scheduler not in SCHEDULERS:
        raise ConfigError(f"--scheduler: must be one of {', '.join(SCHEDULERS)} (got {shape.scheduler!r})")
    for flag, value, low in (("--nodes", shape.nodes, 1), ("--gpus-per-node", shape.gpus_per_node, 0),
                             ("--gpus-per-trial", shape.gpus_per_trial, 1), ("--max-jobs", shape.max_jobs, 1),
                             ("--workers", shape.workers, 1)):
        if value < low:
            raise ConfigError(f"{flag}: must be >= {low} (got {value})")
    if shape.gpus_per_node and shape.gpus_per_node % shape.gpus_per_trial:
        raise ConfigError(f"--gpus-per-trial: must divide --gpus-per-node = {shape.gpus_per_node} so that no GPU "
                          f"is left out (got {shape.gpus_per_trial})")
    try:
        seconds = parse_duration(shape.time)
    except ValueError:
        raise ConfigError(f"--time: must be HH:MM:SS, D-HH:MM:SS, MM:SS or seconds (got {shape.time!r})") from None
    if seconds < 60:
        raise ConfigError(f"--time: must be at least 1 minute, SLURM's and PBS's unit (got {shape.time!r})")
    for flag, value in (("--time-margin", shape.time_margin), ("--signal-lead", shape.signal_lead)):
        if not 0 < value < seconds:
            raise ConfigError(f"{flag}: must be > 0 and shorter than --time = {shape.time} (got {value})")
    if shape.launcher and shape.launcher not in LAUNCHERS:
        raise ConfigError(f"--launcher: must be one of {', '.join(LAUNCHERS)} (got {shape.launcher!r})")
    if not _NAME.match(shape.job_name):
        raise ConfigError(f"--job-name: letters, digits and _.+- only, at most 64 (got {shape.job_name!r})")
    return shape


def render(shape: JobShape, argv: list[str] | None = None) -> str:
    """The job script for ``shape``; ``argv`` (the generating command) is written into its header."""
    check_shape(shape)
    made_by = "python -m hpc_hpo jobscript " + " ".join(shlex.quote(a) for a in (argv or []))
    return (_slurm if shape.scheduler == "slurm" else _pbs)(shape, made_by.rstrip())


def _layout(shape: JobShape) -> str:
    workers = shape.ranks - 1
    if shape.gpus_per_node == 0:
        return f"{shape.ranks} MPI ranks: the master and {workers} CPU workers"
    groups = ""
    if shape.gpus_per_trial > 1:
        groups = (f"; gpus_per_trial = {shape.gpus_per_trial} in the experiment's [workers] table makes "
                  f"{workers // shape.gpus_per_trial} trials of {shape.gpus_per_trial} GPUs at a time")
    return (f"{shape.ranks} MPI ranks: the master on the first node, one worker per GPU "
            f"({shape.nodes} x {shape.gpus_per_node}){groups}")


_TAIL = """\
# The run: exit 0 = the search is complete, 3 = stopped at the time limit or a signal (resumable).
{command} &
RUN=$!
trap 'echo "hpc_hpo job: stop signal: ending the run; the next job resumes it"; kill -USR1 "$RUN"' USR1 TERM
CODE=0
wait "$RUN" || CODE=$?
while kill -0 "$RUN" 2>/dev/null; do  # wait returns early when the trap ran: wait for the run itself
    CODE=0
    wait "$RUN" || CODE=$?
done
case "$CODE" in
    0) echo "hpc_hpo job: the search is complete"; [ -n "$NEXT" ] && {cancel} "$NEXT" ;;
    3) if [ -n "$NEXT" ]; then echo "hpc_hpo job: stopped early; job $NEXT resumes the search"
       else echo "hpc_hpo job: stopped early; no job follows (HPC_HPO_MAX_JOBS reached): submit again to go on"; fi ;;
    *) echo "hpc_hpo job: the run failed with exit code $CODE; no job follows"; [ -n "$NEXT" ] && {cancel} "$NEXT" ;;
esac
exit "$CODE"
"""


_BODY = """\
# Your site's environment (uncomment and adapt):
# module load openmpi cuda python
# source "$HOME/venvs/hpc_hpo/bin/activate"

set -u
cd "${{{workdir}:-.}}" || exit 2
CHAIN=${{HPC_HPO_CHAIN:-1}}
MAX_JOBS=${{HPC_HPO_MAX_JOBS:-{max_jobs}}}
SCRIPT=${{HPC_HPO_JOBSCRIPT:-$0}}  # the batch system's copy of this script, readable while the job runs

# Queue the next job first, to start once this one ends however it ends (killed at {end} too).
NEXT=""
if [ "$CHAIN" -lt "$MAX_JOBS" ]; then
    NEXT=$({submit}) || NEXT=""
fi
echo "hpc_hpo job ${job_id}: $CHAIN of at most $MAX_JOBS; next job: ${{NEXT:-none}}"

"""


def _body(shape: JobShape, workdir: str, job_id: str, end: str, submit: str, cancel: str) -> str:
    """What both scripts do after their directives: queue the successor, run, cancel it when done."""
    return (_BODY.format(workdir=workdir, max_jobs=shape.max_jobs, end=end, submit=submit, job_id=job_id)
            + _TAIL.format(command=shape.command, cancel=cancel))


def _slurm(shape: JobShape, made_by: str) -> str:
    gpus = f"#SBATCH --gpus-per-node={shape.gpus_per_node}\n" if shape.gpus_per_node else ""
    return f"""#!/bin/bash
# hpc_hpo search on SLURM: {shape.nodes} node(s), {_layout(shape)}.
# Made by: {made_by}
# Submit once with `sbatch THIS_FILE`: each job queues the next one (at most HPC_HPO_MAX_JOBS, default
# {shape.max_jobs}) until the search is complete; `python -m hpc_hpo status RESULTS` shows how it stands.
#SBATCH --job-name={shape.job_name}
#SBATCH --nodes={shape.nodes}
#SBATCH --ntasks-per-node={shape.per_node + 1}
{gpus}#SBATCH --time={shape.time}
#SBATCH --signal=B:USR1@{shape.signal_lead}
#SBATCH --output={shape.job_name}-%j.out

""" + _body(shape, workdir="SLURM_SUBMIT_DIR", job_id="SLURM_JOB_ID", end="the time limit", submit=(
        'sbatch --parsable --dependency="afterany:$SLURM_JOB_ID" \\\n'
        '        --export="ALL,HPC_HPO_CHAIN=$((CHAIN + 1))" "$SCRIPT"'), cancel="scancel")


def _pbs(shape: JobShape, made_by: str) -> str:
    hours = parse_duration(shape.time)
    walltime = f"{int(hours // 3600):02d}:{int(hours % 3600 // 60):02d}:{int(hours % 60):02d}"
    gpus = f":ngpus={shape.gpus_per_node}" if shape.gpus_per_node else ""
    per_node = shape.per_node
    select = f"1:ncpus={per_node + 1}{gpus}:mpiprocs={per_node + 1}"
    if shape.nodes > 1:
        select += f"+{shape.nodes - 1}:ncpus={per_node}{gpus}:mpiprocs={per_node}"
    return f"""#!/bin/bash
# hpc_hpo search on PBS: {shape.nodes} node(s), {_layout(shape)}.
# Made by: {made_by}
# Submit once with `qsub THIS_FILE`: each job queues the next one (at most HPC_HPO_MAX_JOBS, default
# {shape.max_jobs}) until the search is complete; `python -m hpc_hpo status RESULTS` shows how it stands.
# PBS sends no signal before the walltime: hpc_hpo reads PBS_WALLTIME and stops {shape.time_margin} s before it.
#PBS -N {shape.job_name}
#PBS -l select={select}
#PBS -l walltime={walltime}
#PBS -j oe

""" + _body(shape, workdir="PBS_O_WORKDIR", job_id="PBS_JOBID", end="the walltime", submit=(
        'qsub -W depend="afterany:$PBS_JOBID" \\\n'
        '        -v "HPC_HPO_CHAIN=$((CHAIN + 1)),HPC_HPO_MAX_JOBS=$MAX_JOBS" "$SCRIPT"'), cancel="qdel")
