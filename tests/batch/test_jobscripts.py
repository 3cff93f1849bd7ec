"""Job scripts: the generator, shellcheck, PBS's script under bash, and SLURM's on a real one-node SLURM.

The SLURM tests start munged, slurmctld and slurmd (scripts/slurm_cluster.sh, as root, on
loopback) and stop them at the end. Without SLURM installed they skip, unless
HPC_HPO_TEST_SLURM=1 (set by scripts/test.sh, which installs it) makes them fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpc_hpo.results.reader import read_results

from conftest import REPO, base_env, find_mpirun, hpo, write_experiment
from experiments import OBJECTIVE, experiment

CHECKED_IN = {
    "slurm.sbatch": ["--scheduler", "slurm", "--nodes", "2", "--gpus-per-node", "4", "--time", "12:00:00",
                     "experiment.toml"],
    "pbs.sh": ["--scheduler", "pbs", "--nodes", "2", "--gpus-per-node", "4", "--time", "12:00:00", "experiment.toml"],
}
REQUIRE = os.environ.get("HPC_HPO_TEST_SLURM") == "1"


def steady_search(directory: Path, trials: int, sleep: float) -> None:
    """A search whose every trial succeeds and takes ``sleep`` seconds: its length is known."""
    write_experiment(directory, experiment(trials=trials, sleep=sleep, extra_phases=False).replace(
        'x     = { type = "float", low = -5.0, high = 5.0 }', 'x     = { type = "float", low = -3.0, high = 3.0 }'),
        OBJECTIVE.replace('    if params["act"] == "nan":\n        return float("nan")\n', ""))


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        if REQUIRE:
            pytest.fail(f"{tool} is not installed: scripts/slurm_cluster.sh install")
        pytest.skip(f"{tool} is not installed (scripts/slurm_cluster.sh install)")


@pytest.mark.parametrize("name", sorted(CHECKED_IN))
def test_the_checked_in_job_scripts_are_what_the_generator_prints(tmp_path, name):
    out = hpo(["jobscript", *CHECKED_IN[name]], tmp_path)
    assert out.returncode == 0, out.stderr
    assert (REPO / "jobscripts" / name).read_text() == out.stdout, "regenerate it: see docs/long-searches.md"
    assert os.access(REPO / "jobscripts" / name, os.X_OK)


def test_the_slurm_script_asks_for_a_rank_per_gpu_plus_the_master_and_the_early_signal(tmp_path):
    text = hpo(["jobscript", *CHECKED_IN["slurm.sbatch"]], tmp_path).stdout
    # 5 task slots on each node, 9 ranks filling them in order: 1 + 4 on the first node, 4 on the second (with
    # --ntasks=9 alone SLURM may put 8 on the first node and 1 on the second: 4 GPUs shared, 3 idle)
    assert "#SBATCH --ntasks=" not in text
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=5", "#SBATCH --gpus-per-node=4", "#SBATCH --time=12:00:00",
                 "#SBATCH --signal=B:USR1@300",
                 "mpirun -n 9 python -m hpc_hpo run experiment.toml --resume --time-margin 120 &"):
        assert line in text
    srun = hpo(["jobscript", *CHECKED_IN["slurm.sbatch"], "--launcher", "srun"], tmp_path).stdout
    assert "srun -n 9 --distribution=block --kill-on-bad-exit=1 python -m hpc_hpo run experiment.toml" in srun
    pbs = hpo(["jobscript", *CHECKED_IN["pbs.sh"]], tmp_path).stdout
    assert "#PBS -l select=1:ncpus=5:ngpus=4:mpiprocs=5+1:ncpus=4:ngpus=4:mpiprocs=4" in pbs
    assert 'mpiexec -n 9 --hostfile "$PBS_NODEFILE" python -m hpc_hpo run experiment.toml --resume' in pbs


@pytest.mark.parametrize("args, message", [
    (["--nodes", "0"], "--nodes: must be >= 1 (got 0)"),
    (["--gpus-per-trial", "3"], "--gpus-per-trial: must divide --gpus-per-node = 4 so that no GPU is left out (got 3)"),
    (["--time", "soon"], "--time: must be HH:MM:SS, D-HH:MM:SS, MM:SS or seconds (got 'soon')"),
    (["--time", "00:00:30"], "--time: must be at least 1 minute, SLURM's and PBS's unit (got '00:00:30')"),
    (["--time", "00:05:00", "--signal-lead", "600"],
     "--signal-lead: must be > 0 and shorter than --time = 00:05:00 (got 600)"),
    (["--job-name", "my job"], "--job-name: letters, digits and _.+- only, at most 64 (got 'my job')"),
])
def test_bad_shapes_are_refused_in_one_line(tmp_path, args, message):
    out = hpo(["jobscript", "--scheduler", "slurm", "x.toml", *args], tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip() == f"hpc_hpo: error: {message}"


@pytest.mark.parametrize("args", [
    CHECKED_IN["slurm.sbatch"], CHECKED_IN["pbs.sh"],
    ["--scheduler", "slurm", "--launcher", "srun", "--gpus-per-node", "8", "--gpus-per-trial", "2", "a b.toml"],
    ["--scheduler", "pbs", "--gpus-per-node", "0", "--workers", "16", "--launcher-args", "--bind-to core", "e.toml"],
])
def test_generated_scripts_pass_shellcheck(tmp_path, args):
    need("shellcheck")
    script = tmp_path / "job.sh"
    assert hpo(["jobscript", *args, "-o", str(script)], tmp_path).returncode == 0
    checked = subprocess.run(["shellcheck", "--severity=style", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout


# --- PBS: the script under bash, with the environment PBS gives a job and qsub/qdel stand-ins -------------

STUBS = {
    "qsub": '#!/bin/bash\necho "qsub $*" >> "$HPC_HPO_STUB_LOG"\necho "$((RANDOM + 1000)).pbs-server"\n',
    "qdel": '#!/bin/bash\necho "qdel $*" >> "$HPC_HPO_STUB_LOG"\n',
}


def pbs_job(tmp_path: Path, job_id: str, walltime: str, chain: int = 1) -> subprocess.CompletedProcess:
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    for name, body in STUBS.items():
        (stubs / name).write_text(body)
        (stubs / name).chmod(0o755)
    nodefile = tmp_path / "nodefile"
    nodefile.write_text("localhost\n" * 3)
    env = {**base_env(), "PATH": f"{stubs}:{Path(find_mpirun()).parent}:{os.environ['PATH']}",
           "PBS_JOBID": job_id, "PBS_O_WORKDIR": str(tmp_path), "PBS_NODEFILE": str(nodefile),
           "PBS_WALLTIME": walltime, "PBS_ENVIRONMENT": "PBS_BATCH", "PBS_JOBNAME": "hpc_hpo",
           "HPC_HPO_CHAIN": str(chain), "HPC_HPO_STUB_LOG": str(tmp_path / "stubs.log")}
    return subprocess.run(["bash", str(tmp_path / "pbs.sh")], cwd="/", env=env, capture_output=True, text=True,
                          timeout=300)


def write_pbs_script(tmp_path: Path) -> None:
    out = hpo(["jobscript", "--scheduler", "pbs", "--gpus-per-node", "0", "--workers", "2", "--time", "00:10:00",
               "--launcher", "mpirun", "--launcher-args", "--oversubscribe --bind-to none", "--time-margin", "3",
               "--python", sys.executable, "--max-jobs", "3", "experiment.toml", "-o", str(tmp_path / "pbs.sh")],
              tmp_path)
    assert out.returncode == 0, out.stderr


def test_pbs_script_runs_the_search_queues_a_successor_and_cancels_it_when_done(tmp_path):
    write_experiment(tmp_path, experiment(trials=6, extra_phases=False), OBJECTIVE)
    write_pbs_script(tmp_path)
    job = pbs_job(tmp_path, "100.pbs-server", "00:10:00")
    assert job.returncode == 0, job.stdout + job.stderr
    calls = (tmp_path / "stubs.log").read_text().splitlines()
    assert calls[0] == f"qsub -W depend=afterany:100.pbs-server -v HPC_HPO_CHAIN=2,HPC_HPO_MAX_JOBS=3 {tmp_path / 'pbs.sh'}"
    successor = job.stdout.split("next job: ")[1].split()[0]
    assert calls[1:] == [f"qdel {successor}"] and "the search is complete" in job.stdout
    assert len(read_results(tmp_path / "results.h5").records()) == 6


def test_pbs_walltime_stops_the_job_resumably_and_its_successor_finishes(tmp_path):
    steady_search(tmp_path, trials=40, sleep=0.5)
    write_pbs_script(tmp_path)
    first = pbs_job(tmp_path, "200.pbs-server", "00:00:12")  # shorter than the search: hpc_hpo stops itself
    assert first.returncode == 3, first.stdout + first.stderr
    assert "job ends at" in first.stderr and "(PBS_WALLTIME)" in first.stderr
    assert "stopped early; job " in first.stdout
    assert not any(c.startswith("qdel") for c in (tmp_path / "stubs.log").read_text().splitlines())
    stored = len([r for r in read_results(tmp_path / "results.h5").records() if r["status"] != "running"])
    assert 2 <= stored < 40
    second = pbs_job(tmp_path, "201.pbs-server", "00:10:00", chain=2)  # what PBS starts after the first
    assert second.returncode == 0, second.stdout + second.stderr
    rows = read_results(tmp_path / "results.h5").records()
    assert len(rows) == 40 and sorted(r["trial_id"] for r in rows) == list(range(40))


def test_the_chain_ends_at_max_jobs(tmp_path):
    write_experiment(tmp_path, experiment(trials=3, extra_phases=False), OBJECTIVE)
    write_pbs_script(tmp_path)
    last = pbs_job(tmp_path, "300.pbs-server", "00:10:00", chain=3)
    assert last.returncode == 0 and "3 of at most 3; next job: none" in last.stdout
    assert not (tmp_path / "stubs.log").exists()


# --- SLURM: a real one-node cluster ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    for tool in ("slurmctld", "slurmd", "munged", "sbatch"):
        need(tool)
    if os.geteuid() != 0:
        if REQUIRE:
            pytest.fail("the test cluster runs its daemons as root: run scripts/test.sh as root")
        pytest.skip("the test cluster runs its daemons as root")
    state = tmp_path_factory.mktemp("slurm")
    script = str(REPO / "scripts" / "slurm_cluster.sh")
    started = subprocess.run([script, "start", str(state)], capture_output=True, text=True, timeout=120)
    try:
        assert started.returncode == 0, started.stdout + started.stderr + "".join(
            p.read_text() for p in (state / "log").glob("*.log"))
        yield {"SLURM_CONF": str(state / "slurm.conf"), "SBATCH_OVERCOMMIT": "1"}
    finally:
        subprocess.run([script, "stop", str(state)], timeout=60)


def slurm_cmd(env: dict, *args: str, cwd: Path | None = None) -> str:
    out = subprocess.run(list(args), env={**base_env(), **env}, capture_output=True, text=True, timeout=30, cwd=cwd)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def job_state(env: dict, job_id: str) -> dict[str, str]:
    text = slurm_cmd(env, "scontrol", "show", "job", job_id)
    return dict(item.split("=", 1) for item in text.split() if "=" in item)


def wait_for(env: dict, job_id: str, timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = job_state(env, job_id)
        if state["JobState"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"):
            return state
        time.sleep(1)
    pytest.fail(f"SLURM job {job_id} did not end within {timeout}s: {job_state(env, job_id)}")


def submit(tmp_path: Path, env: dict, *generator_args: str, python: str = sys.executable,
           launcher_args: str = "--oversubscribe --bind-to none") -> str:
    script = tmp_path / "job.sbatch"
    out = hpo(["jobscript", "--scheduler", "slurm", "--gpus-per-node", "0", "--workers", "2",
               f"--launcher-args={launcher_args}", "--python", python, "--max-jobs", "3", *generator_args,
               "experiment.toml", "-o", str(script)], tmp_path)
    assert out.returncode == 0, out.stderr
    path_env = {**env, "PATH": f"{Path(find_mpirun()).parent}:{os.environ['PATH']}"}
    return slurm_cmd(path_env, "sbatch", "--parsable", str(script), cwd=tmp_path)


def test_slurm_runs_the_generated_script_and_cancels_the_successor_of_a_complete_search(tmp_path, slurm):
    write_experiment(tmp_path, experiment(trials=8, extra_phases=False), OBJECTIVE)
    job = submit(tmp_path, slurm, "--time", "00:05:00", "--time-margin", "10", "--signal-lead", "30")
    state = wait_for(slurm, job, 180)
    log = (tmp_path / f"hpc_hpo-{job}.out").read_text()
    assert state["JobState"] == "COMPLETED" and state["ExitCode"] == "0:0", log
    assert "job ends at" in log and "(squeue)" in log  # the time limit, as SLURM tells it
    successor = log.split("next job: ")[1].split()[0]
    assert job_state(slurm, successor)["JobState"] == "CANCELLED"
    assert len(read_results(tmp_path / "results.h5").records()) == 8


def test_the_srun_launcher_of_the_generated_script_runs_the_search_under_slurm(tmp_path, slurm):
    """``--launcher srun``: SLURM starts the ranks itself (MPICH through Debian SLURM's PMI-2 plugin; Open MPI
    would need SLURM's PMIx plugin and library), each rank learns its node-local rank from SLURM_LOCALID."""
    python = REPO / ".venv-mpich" / "bin" / "python"
    if not python.exists():
        if REQUIRE:
            pytest.fail("srun runs the ranks with MPICH: scripts/setup_mpich.sh")
        pytest.skip("srun runs the ranks with MPICH: scripts/setup_mpich.sh")
    write_experiment(tmp_path, experiment(trials=8, extra_phases=False), OBJECTIVE)
    job = submit(tmp_path, slurm, "--launcher", "srun", "--time", "00:05:00", "--time-margin", "10",
                 "--signal-lead", "30", python=str(python), launcher_args="--mpi=pmi2")
    state = wait_for(slurm, job, 180)
    log = (tmp_path / f"hpc_hpo-{job}.out").read_text()
    assert state["JobState"] == "COMPLETED" and state["ExitCode"] == "0:0", log
    assert "3 ranks: master on" in log  # one job step of 3 MPI ranks, not 3 separate runs
    rows = read_results(tmp_path / "results.h5").records()
    assert len(rows) == 8 and {r["rank"] for r in rows} <= {1, 2}
    assert {r["status"] for r in rows} <= {"done", "failed"}  # (the objective fails on purpose for one activation)
    successor = log.split("next job: ")[1].split()[0]
    assert job_state(slurm, successor)["JobState"] == "CANCELLED"


def test_a_search_longer_than_the_time_limit_goes_on_in_the_next_slurm_jobs_and_loses_nothing(tmp_path, slurm):
    steady_search(tmp_path, trials=100, sleep=1.0)  # 50 s of work for 2 workers; each job may run 1 minute
    job = submit(tmp_path, slurm, "--time", "00:01:00", "--time-margin", "5", "--signal-lead", "10")
    chain, logs = [], []
    while True:
        state = wait_for(slurm, job, 150)
        log = (tmp_path / f"hpc_hpo-{job}.out").read_text()
        stored = [r for r in read_results(tmp_path / "results.h5").records() if r["status"] != "running"]
        chain.append((job, state["ExitCode"], len(stored)))
        logs.append(log)
        if state["ExitCode"] == "0:0" or len(chain) == 3:
            break
        assert state["ExitCode"] == "3:0", log  # stopped early, resumable: the next job goes on
        job = log.split("next job: ")[1].split()[0]
    assert len(chain) >= 2, f"the first job finished the search: make it longer ({chain})"
    assert chain[-1][1] == "0:0" and state["JobState"] == "COMPLETED", logs[-1]
    for (_, _, stored), log in zip(chain[:-1], logs[1:], strict=True):
        assert f"resuming results.h5: {stored} of 100 trials finished" in log
    rows = read_results(tmp_path / "results.h5").records()
    assert len(rows) == 100 and sorted(r["trial_id"] for r in rows) == list(range(100))
    assert all(r["status"] == "done" for r in rows)
    successor = logs[-1].split("next job: ")[1].split()[0]
    if successor != "none":
        assert job_state(slurm, successor)["JobState"] == "CANCELLED"
    print(f"jobs (id, exit, trials stored at its end): {chain}")
