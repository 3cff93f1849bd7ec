"""Batch life: killed jobs, resumed searches, signals, time limits, and files that are not fit to continue."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from hpc_hpo.store import read_results

from conftest import base_env, hpo, mpirun_command, write_experiment
from experiments import OBJECTIVE, experiment, header

SLOW = """
import time

def objective(params, trial):
    time.sleep(params["sleep"])
    return (params["x"] - 1.0) ** 2 + params["units"] / 1000
"""


def crash_experiment(sleep: float = 0.4) -> str:
    """Sobol, Bayesian, then random points evaluated twice each: every kind of restored state."""
    return header("crash", sleep=sleep, seed=11).replace('"nan"', '"elu"') + """
[[phase]]
strategy = "sobol"
trials = 8

[[phase]]
strategy = "bayes"
trials = 8

[[phase]]
strategy = "random"
trials = 100
repeats = 2
"""


def finished(path: Path) -> dict[int, tuple]:
    """Trial id -> (status, value, point) of every stored (finished) trial; asserts ids are unique."""
    rows = [r for r in read_results(path).records() if r["status"] != "running"]
    ids = [r["trial_id"] for r in rows]
    assert len(ids) == len(set(ids)), f"duplicated trial ids: {sorted(ids)}"
    return {r["trial_id"]: (r["status"], repr(r["value"]), tuple(v for k, v in r.items() if k.startswith("param_")))
            for r in rows}


def start(cwd: Path, args: list[str], ranks: int = 3) -> subprocess.Popen:
    return subprocess.Popen(mpirun_command(ranks, args), cwd=cwd, env=base_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def rank_pids(tag: str) -> dict[int, int]:
    """MPI rank -> pid of the ranks whose command line holds ``tag`` (read from their environment)."""
    pids = subprocess.run(["pgrep", "-f", tag], capture_output=True, text=True).stdout.split()
    ranks = {}
    for pid in map(int, pids):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in env:
            if item.startswith(b"OMPI_COMM_WORLD_RANK="):
                ranks[int(item.split(b"=")[1])] = pid
    return ranks


def kill_job(proc: subprocess.Popen, tag: str) -> None:
    """kill -9 of the whole job: mpirun and every rank (found by the unique results path they were given)."""
    os.killpg(proc.pid, signal.SIGKILL)
    subprocess.run(["pkill", "-9", "-f", tag], check=False)
    proc.communicate(timeout=30)


def test_a_search_killed_20_times_at_random_moments_loses_nothing(tmp_path):
    write_experiment(tmp_path, crash_experiment(), SLOW)
    results = tmp_path / "results.h5"
    args = ["run", "experiment.toml", "--resume", "--results", str(results)]
    budget = 8 + 8 + 100 * 2
    rng = random.Random(2026)
    seen: dict[int, tuple] = {}
    rounds = []
    for _ in range(20):
        proc = start(tmp_path, args)
        time.sleep(rng.uniform(1.0, 7.0))  # start-up takes 2-4 s here: before the file exists, mid-trial, mid-flush
        assert proc.poll() is None, proc.communicate()[0]
        kill_job(proc, str(results))
        if not results.exists():
            rounds.append(0)
            continue
        now = finished(results)  # the file opens, and its ids are unique
        lost = {i: row for i, row in seen.items() if now.get(i) != row}
        assert not lost, f"trials stored before a kill changed or vanished: {lost}"
        rounds.append(len(now) - len(seen))
        seen = now
    assert len(seen) < budget, "the search finished before the 20th kill: make it longer"
    last = hpo(args, tmp_path, ranks=3, timeout=180)
    assert last.returncode == 0, last.output
    final = finished(results)
    assert len(final) == budget
    assert all(final[i] == row for i, row in seen.items())
    rows = read_results(results).records()
    assert sorted(r["trial_id"] for r in rows) == sorted(final)  # nothing left running
    for phase, size in ((1, 8), (2, 8), (3, 200)):
        assert sum(r["phase"] == phase for r in rows) == size
    points = [tuple(v for k, v in r.items() if k.startswith("param_")) for r in rows if r["phase"] == 3]
    assert len(set(points)) == 100 and all(points.count(p) == 2 for p in set(points))  # however the kills fell
    print(f"trials stored per round: {rounds}; re-run trials: {sum(r['attempt'] > 1 for r in rows)}; "
          f"runs in the file: {len(read_results(results).runs)}")


def test_resume_continues_the_search_as_one_uninterrupted_run_would(tmp_path):
    write_experiment(tmp_path / "a", experiment(trials=6, extra_phases=False), OBJECTIVE)
    write_experiment(tmp_path / "b", experiment(trials=12, extra_phases=False), OBJECTIVE)
    assert hpo(["run", "experiment.toml"], tmp_path / "a").returncode == 0
    more = hpo(["run", "experiment.toml", "--resume", "--trials", "12"], tmp_path / "a")  # a raised budget
    assert more.returncode == 0, more.stderr
    assert "resuming results.h5: 6 of 12 trials finished" in more.stderr
    assert hpo(["run", "experiment.toml"], tmp_path / "b").returncode == 0

    def points(directory):
        return [tuple(v for k, v in r.items() if k.startswith("param_")) for r in
                read_results(directory / "results.h5").records()]

    assert points(tmp_path / "a") == points(tmp_path / "b")
    again = hpo(["run", "experiment.toml", "--resume", "--trials", "12"], tmp_path / "a")
    assert again.returncode == 0 and "12 of 12 trials finished" in again.stderr
    assert len(read_results(tmp_path / "a" / "results.h5").records()) == 12
    assert [r["exit_code"] for r in read_results(tmp_path / "a" / "results.h5").runs] == [0, 0, 0]


@pytest.mark.parametrize("args, message", [
    (["--force"], "--force: only with --resume (or resume = true in [experiment]): it lets a resume go on "
                  "despite a changed experiment"),
    (["--resume", "--time-limit", "soon"], "argument --time-limit: not a duration: 'soon' (use seconds, MM:SS, "
                                           "HH:MM:SS or D-HH:MM:SS)"),
    (["--resume", "--time-margin", "0"], "argument --time-margin: must be > 0 (got '0')"),
])
def test_bad_resume_and_time_flags_are_one_line_errors_on_every_rank(tmp_path, args, message):
    write_experiment(tmp_path, experiment(trials=3, extra_phases=False), OBJECTIVE)
    out = hpo(["run", "experiment.toml", *args], tmp_path, ranks=3)
    assert out.returncode == 2, out.output
    errors = [line for line in out.stderr.splitlines() if line.startswith("hpc_hpo: error:")]
    assert len(errors) == 1 and errors[0].startswith(f"hpc_hpo: error: {message}"), out.stderr
    assert not (tmp_path / "results.h5").exists()


def test_resume_without_a_file_starts_one_and_resume_true_in_the_file_works(tmp_path):
    write_experiment(tmp_path, experiment(trials=3, extra_phases=False).replace("seed = 1", "seed = 1\nresume = true"),
                     OBJECTIVE)
    first = hpo(["run", "experiment.toml"], tmp_path)
    assert first.returncode == 0, first.stderr
    again = hpo(["run", "experiment.toml", "--trials", "5"], tmp_path)
    assert again.returncode == 0 and "resuming results.h5: 3 of 5 trials finished" in again.stderr


def test_resume_refuses_a_changed_experiment_unless_forced(tmp_path):
    write_experiment(tmp_path, experiment(trials=3, extra_phases=False), OBJECTIVE)
    assert hpo(["run", "experiment.toml"], tmp_path).returncode == 0
    before = (tmp_path / "results.h5").read_bytes()
    write_experiment(tmp_path, experiment(trials=3, direction="maximize", extra_phases=False))
    refused = hpo(["run", "experiment.toml", "--resume"], tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.strip() == ("hpc_hpo: error: --resume: results.h5 was made by a different experiment "
                                      "(direction: 'minimize' -> 'maximize'); use a new --results, or --force to "
                                      "continue anyway")
    assert (tmp_path / "results.h5").read_bytes() == before
    write_experiment(tmp_path, experiment(trials=3, extra_phases=False).replace("high = 5.0", "high = 6.0"))
    refused = hpo(["run", "experiment.toml", "--resume"], tmp_path)
    assert refused.returncode == 2 and "space: x {" in refused.stderr and "'high': 6.0" in refused.stderr
    write_experiment(tmp_path, experiment(trials=3, extra_phases=False).replace(
        'units = { type = "int"', 'units = { type = "float"'))
    refused = hpo(["run", "experiment.toml", "--resume", "--force"], tmp_path)
    assert refused.returncode == 2 and refused.stderr.strip().endswith(
        "stores other parameter columns (param_units): parameters may change their range, not their name or type; "
        "use a new --results")
    write_experiment(tmp_path, experiment(trials=3, extra_phases=False).replace("high = 5.0", "high = 6.0"))
    forced = hpo(["run", "experiment.toml", "--resume", "--force", "--trials", "5"], tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert "--force: continuing results.h5 although space: x" in forced.stderr
    assert len(read_results(tmp_path / "results.h5").records()) == 5


@pytest.mark.parametrize("content, message", [
    (b"precious notes, not HDF5\n" * 100, "not an HDF5 file; hpc_hpo will not touch it"),
    (None, "an HDF5 file but not an hpc_hpo results file (no the format_version attribute)"),
    ("truncated", "); the file is damaged (truncated or not fully copied?); hpc_hpo will not touch it"),
])
def test_resume_refuses_a_file_that_is_not_ours_or_damaged_and_leaves_it_alone(tmp_path, content, message):
    write_experiment(tmp_path, experiment(trials=3), OBJECTIVE)
    path = tmp_path / "results.h5"
    if content is None:
        with h5py.File(path, "w") as f:
            f["data"] = [1, 2, 3]
    elif content == "truncated":
        assert hpo(["run", "experiment.toml"], tmp_path).returncode == 0
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    started = time.monotonic()
    out = hpo(["run", "experiment.toml", "--resume"], tmp_path, ranks=3)
    assert out.returncode == 2, out.output
    errors = [line for line in out.stderr.splitlines() if line.startswith("hpc_hpo: error:")]
    assert len(errors) == 1 and message in errors[0], out.stderr
    assert "Traceback" not in out.output and time.monotonic() - started < 30
    assert path.read_bytes() == before


def test_a_second_job_on_the_same_file_is_refused_and_a_stale_lock_is_taken_over(tmp_path):
    write_experiment(tmp_path, experiment(trials=200, sleep=0.05, extra_phases=False), OBJECTIVE)
    results = tmp_path / "results.h5"
    first = start(tmp_path, ["run", "experiment.toml", "--results", str(results)], ranks=2)
    try:
        deadline = time.monotonic() + 60
        while not (results.exists() and read_results(results).records()) and time.monotonic() < deadline:
            time.sleep(0.1)
        second = hpo(["run", "experiment.toml", "--resume", "--results", str(results)], tmp_path, ranks=2)
        assert second.returncode == 2, second.output
        [line] = [line for line in second.stderr.splitlines() if line.startswith("hpc_hpo: error:")]
        assert line.startswith(f"hpc_hpo: error: {results}: in use by another run (pid ") and " on " in line
        assert "wait for it to end, or use another --results" in line
    finally:
        kill_job(first, str(results))  # leaves a stale lock behind
    assert (tmp_path / "results.h5.lock").read_text().startswith("{")
    third = hpo(["run", "experiment.toml", "--resume", "--results", str(results), "--trials", "20"], tmp_path,
                ranks=2)
    assert third.returncode == 0, third.output
    assert "taking over a stale lock (pid " in third.stderr
    assert not (tmp_path / "results.h5.lock").exists()


def stop_with(signum: int, target: str, tmp_path: Path, sleep: float = 2.0):
    """Start a 2-worker run of slow inline trials, send ``signum`` to ``target`` once trials run."""
    write_experiment(tmp_path, experiment(trials=50, sleep=sleep, extra_phases=False), OBJECTIVE)
    results = tmp_path / "results.h5"
    proc = start(tmp_path, ["run", "experiment.toml", "--resume", "--results", str(results)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (results.exists() and read_results(results).trials.size >= 2):
        time.sleep(0.1)
    ranks = rank_pids(str(results))
    pids = {"mpirun": proc.pid, "master": ranks[0], "worker": ranks[2]}
    sent = time.monotonic()
    os.kill(pids[target], signum)
    try:
        output, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        kill_job(proc, str(results))
        pytest.fail("the job did not end after the signal")
    return proc.returncode, output, time.monotonic() - sent


@pytest.mark.parametrize("signum, target", [(signal.SIGUSR1, "mpirun"), (signal.SIGTERM, "master"),
                                            (signal.SIGINT, "worker")])
def test_a_stop_signal_ends_the_job_resumably_and_resume_reruns_the_running_trials(tmp_path, signum, target):
    code, output, seconds = stop_with(signum, target, tmp_path)
    assert code == 3, output
    assert f"got {signal.Signals(signum).name}: stopping;" in output and "will run again on --resume" in output
    assert seconds < 10  # the workers' inline trials (2 s) end at the signal or at the master's stop
    results = read_results(tmp_path / "results.h5")
    assert results.runs[-1]["exit_code"] == 3
    running = [r for r in results.records() if r["status"] == "running"]
    assert running, "the trials running at the signal are kept for a re-run"
    again = hpo(["run", "experiment.toml", "--resume", "--trials", "3"], tmp_path, ranks=3)
    assert again.returncode == 0, again.output
    rows = read_results(tmp_path / "results.h5").records()
    assert {r["trial_id"] for r in running} <= {r["trial_id"] for r in rows if r["attempt"] == 2}
    assert all(r["status"] != "running" for r in rows)


def test_a_second_signal_ends_the_job_at_once(tmp_path):
    write_experiment(tmp_path, experiment(trials=50, sleep=30.0, extra_phases=False), OBJECTIVE)
    results = tmp_path / "results.h5"
    proc = start(tmp_path, ["run", "experiment.toml", "--resume", "--results", str(results)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (results.exists() and read_results(results).trials.size >= 2):
        time.sleep(0.1)
    master = rank_pids(str(results))[0]
    os.kill(master, signal.SIGTERM)  # the workers are in 30 s inline trials: the master waits for them
    time.sleep(1.0)
    sent = time.monotonic()
    os.kill(master, signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 5, output
    assert proc.returncode == 130, output
    assert read_results(results).runs[-1]["exit_code"] == 3  # the file was closed at the first signal


def test_the_time_limit_stops_handing_out_trials_and_the_next_job_finishes(tmp_path):
    write_experiment(tmp_path, experiment(trials=100, sleep=0.5, extra_phases=False), OBJECTIVE)
    started = time.monotonic()
    out = hpo(["run", "experiment.toml", "--resume", "--time-limit", "12", "--time-margin", "1"], tmp_path, ranks=3)
    took = time.monotonic() - started
    assert out.returncode == 3, out.output
    assert "no time for another trial before" in out.stderr
    rows = read_results(tmp_path / "results.h5").records()
    assert 4 <= len(rows) < 100 and all(r["status"] != "running" for r in rows)  # nothing was cut off
    # The limit counts from the start of the processes, a little before the run's row: nothing ends past 12 - 1 s.
    assert max(r["t_end"] for r in rows) - read_results(tmp_path / "results.h5").runs[0]["t_start"] < 12 - 1
    assert took < 20
    again = hpo(["run", "experiment.toml", "--resume"], tmp_path, ranks=3)
    assert again.returncode == 0 and len(read_results(tmp_path / "results.h5").records()) == 100


def test_slurm_and_pbs_say_when_the_job_ends():
    from hpc_hpo.walltime import job_end, parse_duration

    assert parse_duration("1-02:03:04") == 93784 and parse_duration("45:00") == 2700 and parse_duration("90") == 90
    assert job_end(None, {"SLURM_JOB_END_TIME": "2000000000"}, now=0).end == 2_000_000_000
    pbs = job_end(None, {"PBS_WALLTIME": "01:00:00", "PBS_JOBID": "1.server"}, now=1000.0)
    assert pbs.end == 1000.0 + 3600 and pbs.source == "PBS_WALLTIME"  # no qstat here: from the master's start
    assert job_end(7.0, {"SLURM_JOB_END_TIME": "5"}, now=10.0).end == 17.0  # --time-limit wins
    assert job_end(None, {}, now=0) is None


def test_a_killed_worker_ends_the_job_promptly_and_resume_recovers(tmp_path):
    write_experiment(tmp_path, experiment(trials=60, sleep=0.3, extra_phases=False), OBJECTIVE)
    results = tmp_path / "results.h5"
    proc = start(tmp_path, ["run", "experiment.toml", "--results", str(results)], ranks=4)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (results.exists() and len(read_results(results).records()) >= 6):
        time.sleep(0.1)
    worker = rank_pids(str(results))[2]
    killed = time.monotonic()
    os.kill(worker, signal.SIGKILL)
    output, _ = proc.communicate(timeout=60)
    ended = time.monotonic() - killed
    assert proc.returncode != 0
    assert ended < 10, f"the job took {ended:.1f} s to end after a worker died"
    # Open MPI ends the other ranks with SIGTERM: the master closes the file as at any stop signal
    # (exit code 3 in /runs), unless the SIGKILL that follows comes first (-9 after recovery).
    first_run = read_results(results).runs[0]["exit_code"]
    print(f"a killed worker ended the job in {ended:.2f} s; the master recorded exit code {first_run}")
    again = hpo(["run", "experiment.toml", "--resume", "--results", str(results)], tmp_path, ranks=3)
    assert again.returncode == 0, again.output
    assert read_results(results).runs[0]["exit_code"] in (3, -9)
    assert len(finished(results)) == 60


def test_an_objective_that_fails_to_import_on_one_worker_stops_every_rank(tmp_path):
    objective = "import os\nif os.environ.get('OMPI_COMM_WORLD_RANK') == '2':\n    raise ImportError('no GPU driver here')\n" \
                + OBJECTIVE
    write_experiment(tmp_path, experiment(trials=3), objective)
    started = time.monotonic()
    out = hpo(["run", "experiment.toml"], tmp_path, ranks=3)
    assert out.returncode == 2 and time.monotonic() - started < 30
    errors = [line for line in out.stderr.splitlines() if line.startswith("hpc_hpo: error:")]
    assert errors == ["hpc_hpo: error: experiment.objective: cannot import 'objective.py:objective' "
                      "(ImportError: no GPU driver here) on rank 2 (" + os.uname().nodename + ")"]
    assert "Traceback" not in out.output
    assert not (tmp_path / "results.h5").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB file system for the results (tmpfs); skipped where this test may not mount one."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        if os.environ.get("HPC_HPO_TEST_ROOT") == "1":  # scripts/test.sh as root: this test must run
            pytest.fail(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_disk_that_fills_up_mid_run_stops_resumably_and_loses_nothing(tmp_path, small_disk):
    write_experiment(tmp_path, experiment(trials=300, sleep=0.05, extra_phases=False), OBJECTIVE)
    results = small_disk / "results.h5"
    proc = start(tmp_path, ["run", "experiment.toml", "--results", str(results)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (results.exists() and len(read_results(results).records()) >= 10):
        time.sleep(0.1)
    stored = finished(results)
    subprocess.run(["dd", "if=/dev/zero", f"of={small_disk / 'filler'}", "bs=64k", "count=64"], capture_output=True)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3, output
    assert f"hpc_hpo: error: cannot write {results} (No space left on device); every trial stored before it is " \
           f"safe" in output
    assert "Traceback" not in output and "Segmentation" not in output
    assert all(finished(results).get(i) == row for i, row in stored.items())  # readable as it is
    (small_disk / "filler").unlink()
    assert all(finished(results).get(i) == row for i, row in stored.items())
    again = hpo(["run", "experiment.toml", "--resume", "--results", str(results)], tmp_path, ranks=3)
    assert again.returncode == 0, again.output
    final = finished(results)
    assert len(final) == 300 and all(final[i] == row for i, row in stored.items())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v", "-s"]))
