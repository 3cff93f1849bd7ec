"""When this job must end: ``--time-limit``, or what SLURM or PBS say about the allocation.

The master stops handing out trials that would not finish before ``end - margin`` (judged by
the durations of the trials it has seen), and at ``end - margin`` shuts down as at a stop
signal: the running trials are marked for a re-run and the job exits resumable.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_DURATION = re.compile(r"^(?:(?:(?P<d>\d+)-)?(?:(?P<h>\d+):)?(?P<m>\d+):)?(?P<s>\d+(?:\.\d*)?)$")


def parse_duration(text: str) -> float:
    """Seconds in ``3600``, ``45:00``, ``01:00:00`` or ``1-00:00:00`` (SLURM's forms); ValueError if not."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"not a duration: {text!r} (use seconds, MM:SS, HH:MM:SS or D-HH:MM:SS)")
    parts = {k: float(v) if v else 0.0 for k, v in match.groupdict().items()}
    return parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60 + parts["s"]


@dataclass(frozen=True)
class JobEnd:
    """When the job ends (UNIX seconds) and who said so."""

    end: float
    source: str


def _command(args: list[str]) -> str:
    if shutil.which(args[0]) is None:
        return ""
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _pbs_start(job_id: str) -> float | None:
    """The job's start time from ``qstat -f`` (``stime``), if PBS answers."""
    for line in _command(["qstat", "-f", job_id]).splitlines():
        key, _, value = line.strip().partition(" = ")
        if key == "stime":
            try:
                return time.mktime(time.strptime(value.strip(), "%a %b %d %H:%M:%S %Y"))
            except ValueError:
                return None
    return None


def process_start() -> float:
    """When this process started (UNIX seconds; from /proc on Linux, else now).

    ``--time-limit`` counts from here, not from the master loop, so the seconds MPI and the
    objective's import take at start count against the limit, as they do for the batch system.
    """
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


def job_end(time_limit: float | None = None, environ: Mapping[str, str] | None = None,
            now: float | None = None) -> JobEnd | None:
    """The end of this job, or None when nothing says (then only signals stop it early).

    ``now`` is when the clock of ``time_limit`` started (default: this process's start).
    """
    env = os.environ if environ is None else environ
    if time_limit:
        return JobEnd((process_start() if now is None else now) + time_limit, "--time-limit")
    now = time.time() if now is None else now
    if env.get("SLURM_JOB_END_TIME", "").isdigit():
        return JobEnd(float(env["SLURM_JOB_END_TIME"]), "SLURM_JOB_END_TIME")
    if env.get("SLURM_JOB_ID"):
        left = _command(["squeue", "-h", "-j", env["SLURM_JOB_ID"], "-o", "%L"])
        try:
            return JobEnd(now + parse_duration(left), "squeue")
        except ValueError:
            pass  # UNLIMITED, NOT_SET, or no answer
    if env.get("PBS_WALLTIME"):
        try:
            walltime = parse_duration(env["PBS_WALLTIME"])
        except ValueError:
            log.warning("PBS_WALLTIME=%r is not a duration; ignoring it", env["PBS_WALLTIME"])
            return None
        start = _pbs_start(env.get("PBS_JOBID", "")) if env.get("PBS_JOBID") else None
        return JobEnd((start or now) + walltime, "PBS_WALLTIME" + (" and qstat" if start else ""))
    return None
