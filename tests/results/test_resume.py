"""Batch life: killed jobs, resumed searches, signals, time limits, and files that are not fit to continue."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from hpc_hpo.results.reader import read_results
from hpc_hpo.results.records import TrialRecord
from hpc_hpo.results.resume import inspect_file, previous_trials, recover
from hpc_hpo.results.writer import ResultsWriter
from hpc_hpo.search.space import parse_space

from conftest import RANK_VARS, base_env, hpo, mpirun_command, run_command, write_experiment
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
            name, _, value = item.partition(b"=")
            if name.decode(errors="replace") in RANK_VARS:
                ranks[int(value)] = pid
    return ranks


def kill_job(proc: subprocess.Popen, tag: str) -> None:
    """kill -9 of the whole job: mpirun and every rank (found by the unique results path they were given)."""
    os.killpg(proc.pid, signal.SIGKILL)
    subprocess.run(["pkill", "-9", "-f", tag], check=False)
    proc.communicate(timeout=30)


# --- the pieces of a resume, on files made by the writer -------------------------------------------------

UNIT_SPACE = parse_space({"x": {"type": "float", "low": 0.0, "high": 1.0}})


def unit_record(trial_id: int, status: str = "done", strategy: str = "random", **fields) -> TrialRecord:
    return TrialRecord(trial_id=trial_id, status=status, params={"x": trial_id / 10}, phase=1, strategy=strategy,
                       rank=1, host="node1", t_submit=100.0 + trial_id,
                       value=trial_id / 10 if status == "done" else None, **fields)


def test_previous_trials_lists_each_trial_to_run_again_once_and_the_next_free_id(tmp_path):
    path = tmp_path / "r.h5"
    writer = ResultsWriter.create(path, UNIT_SPACE, attrs={}, slots=3)
    writer.append(unit_record(0))
    writer.append(unit_record(1, "failed", error="boom"))
    writer.set_running(0, unit_record(1, "running"))  # finished, its slot not yet freed when the job ended
    writer.set_running(1, unit_record(2, "running"))
    writer.set_running(2, unit_record(5, "running", strategy="bayes")._replace(params=None))  # still choosing
    writer.set_waiting([unit_record(2, "running"), unit_record(3, "running")])  # 2 twice: a kill mid-write
    writer.close(exit_code=3, trials=2)
    with h5py.File(path, "r", swmr=True) as file:
        previous = previous_trials(file, UNIT_SPACE)
    assert [(r.trial_id, r.status, r.value) for r in previous.trials] == [(0, "done", 0.0), (1, "failed", None)]
    assert [(r.trial_id, r.params) for r in previous.rerun] == [(2, {"x": 0.2}), (3, {"x": 0.3})]
    assert previous.next_id == 6  # past the Bayesian trial that was dropped: ids are never reused


def test_recover_keeps_every_complete_row_of_a_killed_writer_and_says_it_was_killed(tmp_path):
    path = tmp_path / "r.h5"
    script = f"""
import os
from hpc_hpo.results.records import TrialRecord
from hpc_hpo.search.space import parse_space
from hpc_hpo.results.writer import ResultsWriter
space = parse_space({{"x": {{"type": "float", "low": 0.0, "high": 1.0}}}})
writer = ResultsWriter.create({str(path)!r}, space, attrs={{}}, slots=1)
writer.start_run(world_size=2, workers=1, host="login1")
for i in range(5):
    writer.append(TrialRecord(i, "done", {{"x": i / 10}}, 1, "random", 1, "node1", 100.0 + i, value=i / 10,
                              metrics={{"acc": i / 5}}))
writer.set_running(0, TrialRecord(5, "running", {{"x": 0.5}}, 1, "random", 1, "node1", 105.0))
writer.flush()
writer._trials.resize((8,))  # a flush that grew the table, then died before it wrote the rows
writer.file.flush()
os._exit(9)
"""
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    _, clean = inspect_file(path)
    assert not clean
    recover(path)
    with h5py.File(path, "r+") as file:  # HDF5 opens it for writing again
        assert file["runs"][-1]["exit_code"] == -9
        previous = previous_trials(file, UNIT_SPACE)
        assert list(file["metrics"][:, 0]) == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert [r.trial_id for r in previous.trials] == [0, 1, 2, 3, 4] and [r.trial_id for r in previous.rerun] == [5]
    assert not list(tmp_path.glob(".*recovering"))


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


def test_one_process_killed_at_random_moments_keeps_every_trial_it_logged_as_finished(tmp_path):
    """Without mpirun (a workstation, a debugging session) the trial runs inside the master: every trial must
    be written before the next one starts. Seen before the fix: kill -9 after 9 s of 0.5 s trials, 0 of 14 stored."""
    write_experiment(tmp_path, experiment(trials=150, sleep=0.5, extra_phases=False), OBJECTIVE)
    results = tmp_path / "results.h5"
    args = [sys.executable, "-m", "hpc_hpo", "run", "experiment.toml", "--resume", "-v"]
    rng = random.Random(7)
    seen: dict[int, tuple] = {}
    checked = 0
    for _ in range(10):
        proc = subprocess.Popen(args, cwd=tmp_path, env=base_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        logged: list[tuple[float, int]] = []  # (when the line arrived here, trial id)

        def read(stream=proc.stderr, logged=logged):
            for line in stream:
                match = re.search(r"\] trial (\d+) (done|failed|timeout)", line)
                if match:
                    logged.append((time.monotonic(), int(match[1])))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        time.sleep(rng.uniform(1.5, 5.0))
        killed = time.monotonic()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        reader.join(timeout=10)
        now = finished(results)
        due = {trial for when, trial in logged if when <= killed - 0.5}
        assert due <= set(now), f"logged as finished but not in the file: {sorted(due - set(now))}"
        assert all(now.get(i) == row for i, row in seen.items()), "a stored trial changed or vanished"
        checked += len(due)
        seen = now
    assert 0 < len(seen) < 150, "make the search longer or the rounds shorter"
    last = hpo(["run", "experiment.toml", "--resume"], tmp_path, timeout=180)
    assert last.returncode == 0, last.output
    final = finished(results)
    assert sorted(final) == list(range(150)) and all(final[i] == row for i, row in seen.items())
    print(f"{checked} logged trials checked over 10 kills; {len(seen)} stored before the last job")


SLOW_FIRST_POINTS = """
import time

def objective(params):
    time.sleep(10.0 if params["x"] < 1.5 else 0.2)  # the first two grid points end last
    return params["x"]
"""

KILLED_AFTER_RESTORE = """
import os, signal, sys
from hpc_hpo.run import scheduler

restore = scheduler.Scheduler.restore

def restore_then_die(self, *args, **kwargs):
    restore(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)  # after opening the file and replaying the phases, before the loop writes

scheduler.Scheduler.restore = restore_then_die
from hpc_hpo.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_kill_between_opening_the_file_and_the_first_write_loses_no_trial_to_run_again(tmp_path):
    """Resume used to clear /running when it opened the file and write the trials to run again back only at
    the loop's first write: a kill in between lost them, so a grid point was skipped and another repeated."""
    write_experiment(tmp_path, """
        [experiment]
        objective = "objective.py:objective"
        results = "results.h5"
        seed = 5
        [space]
        x = { type = "float", low = 0.0, high = 8.0 }
        [[phase]]
        strategy = "grid"
        steps = { x = 9 }
        [workers]
        executor = "inline"
    """, SLOW_FIRST_POINTS)
    (tmp_path / "inject.py").write_text(KILLED_AFTER_RESTORE)
    results = tmp_path / "results.h5"
    first = start(tmp_path, ["run", "experiment.toml", "--resume", "--results", str(results)], ranks=4)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (results.exists() and len(finished(results)) >= 7):
        time.sleep(0.1)
    os.kill(first.pid, signal.SIGUSR1)  # trials 0 and 1 are still running: they are to run again
    assert first.wait(timeout=60) == 3, first.communicate()[0]
    assert sorted(r["trial_id"] for r in read_results(results).records() if r["status"] == "running") == [0, 1]
    mpirun = mpirun_command(4, [])[: -len([sys.executable, "-m", "hpc_hpo"])]
    killed = subprocess.run([*mpirun, sys.executable, "inject.py", "run", "experiment.toml", "--resume"],
                            cwd=tmp_path, env=base_env(), capture_output=True, text=True, timeout=120)
    assert killed.returncode != 0 and "signal 9" in killed.stderr, killed.stderr
    # Killed with the file open: what it holds must still name both trials to run again.
    assert sorted(r["trial_id"] for r in read_results(results).records() if r["status"] == "running") == [0, 1]
    last = hpo(["run", "experiment.toml", "--resume"], tmp_path, ranks=4, timeout=120)
    assert last.returncode == 0, last.output
    rows = read_results(results).records()
    assert sorted(r["param_x"] for r in rows) == [float(x) for x in range(9)], "a grid point was skipped or repeated"
    assert sorted(r["trial_id"] for r in rows) == list(range(9))
    assert {r["trial_id"]: r["attempt"] for r in rows if r["attempt"] > 1} == {0: 2, 1: 2}


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


def test_resume_proposes_again_the_points_of_trials_no_row_holds(tmp_path):
    """A kill can leave a trial handed out before later ones in no row of the file (under load /running is written
    less often than /trials): the resumed job proposes its point again, and no recorded point twice."""
    write_experiment(tmp_path / "a", experiment(trials=4), OBJECTIVE)
    write_experiment(tmp_path / "b", experiment(trials=4), OBJECTIVE)
    assert hpo(["run", "experiment.toml"], tmp_path / "a").returncode == 0
    assert hpo(["run", "experiment.toml"], tmp_path / "b").returncode == 0
    with h5py.File(tmp_path / "a" / "results.h5", "r+") as file:  # trials 5 (a grid point) and 11 (random) lost
        trials, metrics = file["trials"][:], file["metrics"][:]
        keep = ~np.isin(trials["trial_id"], [5, 11])
        file["trials"][:keep.sum()] = trials[keep]
        file["trials"].resize((keep.sum(),))
        file["metrics"][:keep.sum()] = metrics[keep]
        file["metrics"].resize((keep.sum(), metrics.shape[1]))
    resumed = hpo(["run", "experiment.toml", "--resume"], tmp_path / "a")
    assert resumed.returncode == 0, resumed.stderr
    assert "28 of 30 trials finished" in resumed.stderr

    def points(directory):
        return sorted((r["phase"], *(v for k, v in r.items() if k.startswith("param_")))
                      for r in read_results(directory / "results.h5").records())

    assert points(tmp_path / "a") == points(tmp_path / "b")


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
    """Start a 2-worker run of slow inline trials, send ``signum`` to ``target`` once trials run.

    Returns the exit code, the output, the ids of the trials running just before the signal, and its time."""
    write_experiment(tmp_path, experiment(trials=50, sleep=sleep, extra_phases=False), OBJECTIVE)
    results = tmp_path / "results.h5"
    proc = start(tmp_path, ["run", "experiment.toml", "--resume", "--results", str(results)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (results.exists() and read_results(results).trials.size >= 2):
        time.sleep(0.1)
    ranks = rank_pids(str(results))
    pids = {"mpirun": proc.pid, "master": ranks[0], "worker": ranks[2]}
    running = {r["trial_id"] for r in read_results(results).records() if r["status"] == "running"}
    sent = time.time()
    os.kill(pids[target], signum)
    try:
        output, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        kill_job(proc, str(results))
        pytest.fail("the job did not end after the signal")
    return proc.returncode, output, running, sent


@pytest.mark.parametrize("signum, target", [(signal.SIGUSR1, "mpirun"), (signal.SIGTERM, "master"),
                                            (signal.SIGINT, "worker")])
def test_a_stop_signal_ends_the_job_resumably_and_resume_reruns_the_running_trials(tmp_path, signum, target):
    code, output, before, sent = stop_with(signum, target, tmp_path)
    assert code == 3, output
    assert f"got {signal.Signals(signum).name}: stopping;" in output and "will run again on --resume" in output
    assert "still busy" not in output  # every rank said Bye within the grace: no rank had to be ended
    results = read_results(tmp_path / "results.h5")
    assert results.runs[-1]["exit_code"] == 3
    rows = {r["trial_id"]: r for r in results.records()}
    assert all(r["t_submit"] < sent for r in rows.values())  # nothing was handed out after the signal
    running = {i for i, r in rows.items() if r["status"] == "running"}
    assert before <= set(rows), "a trial running at the signal is neither stored nor kept for a re-run"
    if target == "master":
        # The workers were not signalled: their inline trials ended normally during the goodbye, and those
        # results are stored (they used to be dropped and run again).
        assert not running and all(rows[i]["status"] == "done" and rows[i]["t_end"] > sent for i in before)
        assert "finished meanwhile and stored" in output
    else:
        assert running, "the trials dropped at the signal are kept for a re-run"
    again = hpo(["run", "experiment.toml", "--resume", "--trials", "3"], tmp_path, ranks=3)
    assert again.returncode == 0, again.output
    rows_after = read_results(tmp_path / "results.h5").records()
    assert running <= {r["trial_id"] for r in rows_after if r["attempt"] == 2}
    assert all(r["status"] != "running" for r in rows_after)


def test_a_second_signal_ends_the_job_at_once(tmp_path):
    write_experiment(tmp_path, experiment(trials=50, sleep=30.0, extra_phases=False), OBJECTIVE)
    results = tmp_path / "results.h5"
    proc = start(tmp_path, ["run", "experiment.toml", "--resume", "--results", str(results)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (results.exists() and read_results(results).trials.size >= 2):
        time.sleep(0.1)
    running = [r for r in read_results(results).records() if r["status"] == "running"]
    master = rank_pids(str(results))[0]
    os.kill(master, signal.SIGTERM)  # the workers are in 30 s inline trials: the master waits for them
    time.sleep(1.0)
    os.kill(master, signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    ended = time.time()
    assert proc.returncode == 130, output
    # At once: before the inline trials it was waiting for could end (they take 30 s).
    assert running and ended < min(r["t_submit"] for r in running) + 30, output
    assert read_results(results).runs[-1]["exit_code"] == 130  # the file was closed before the job ended
    assert "a second stop signal" in output


def test_the_time_limit_stops_handing_out_trials_and_the_next_job_finishes(tmp_path):
    write_experiment(tmp_path, experiment(trials=100, sleep=0.5, extra_phases=False), OBJECTIVE)
    out = hpo(["run", "experiment.toml", "--resume", "--time-limit", "12", "--time-margin", "1"], tmp_path, ranks=3)
    assert out.returncode == 3, out.output
    assert "no time for another trial before" in out.stderr
    rows = read_results(tmp_path / "results.h5").records()
    assert 4 <= len(rows) < 100 and all(r["status"] != "running" for r in rows)  # nothing was cut off
    # The limit counts from the start of the processes, a little before the run's row: nothing ends past 12 - 1 s.
    run = read_results(tmp_path / "results.h5").runs[0]
    assert max(r["t_end"] for r in rows) - run["t_start"] < 12 - 1
    assert run["t_end"] - run["t_start"] < 12  # the job itself ended within its limit (its own clock, in the file)
    again = hpo(["run", "experiment.toml", "--resume"], tmp_path, ranks=3)
    assert again.returncode == 0 and len(read_results(tmp_path / "results.h5").records()) == 100


def test_slurm_and_pbs_say_when_the_job_ends():
    from hpc_hpo.batch.walltime import job_end, parse_duration

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
    output, _ = proc.communicate(timeout=60)  # a hang is a failure
    ended = time.monotonic() - killed
    assert proc.returncode != 0
    # Promptly: the job ended because of the dead rank, long before the two live workers could finish the search.
    stored = len(finished(results))
    assert stored < 60, f"the job went on without its dead worker ({stored} of 60 trials)"
    # Open MPI ends the other ranks with SIGTERM: the master closes the file as at any stop signal
    # (exit code 3 in /runs), unless the SIGKILL that follows comes first (-9 after recovery).
    first_run = read_results(results).runs[0]["exit_code"]
    print(f"a killed worker ended the job in {ended:.2f} s with {stored} trials stored; the master recorded exit "
          f"code {first_run}")
    again = hpo(["run", "experiment.toml", "--resume", "--results", str(results)], tmp_path, ranks=3)
    assert again.returncode == 0, again.output
    assert read_results(results).runs[0]["exit_code"] in (3, -9)
    assert len(finished(results)) == 60


def test_an_objective_that_fails_to_import_on_one_worker_stops_every_rank(tmp_path):
    objective = "import os\nif os.environ.get('OMPI_COMM_WORLD_RANK', os.environ.get('PMI_RANK')) == '2':\n    raise ImportError('no GPU driver here')\n" \
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


def stopped_with_trials_to_run_again(tmp_path: Path, results: Path) -> dict[int, tuple]:
    """A search of 2 s inline trials stopped by SIGUSR1 (as SLURM's warning) while trials run: what it stored."""
    write_experiment(tmp_path, experiment(trials=50, sleep=2.0, extra_phases=False), OBJECTIVE)
    proc = start(tmp_path, ["run", "experiment.toml", "--resume", "--results", str(results)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (results.exists() and len(finished(results)) >= 2):
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGUSR1)
    assert proc.wait(timeout=60) == 3, proc.communicate()[0]
    assert any(r["status"] == "running" for r in read_results(results).records())
    return finished(results)


def test_a_full_disk_at_resume_is_one_line_and_exit_3_and_changes_nothing(tmp_path, small_disk):
    results = small_disk / "results.h5"
    stored = stopped_with_trials_to_run_again(tmp_path, results)
    running = [r["trial_id"] for r in read_results(results).records() if r["status"] == "running"]
    subprocess.run(["dd", "if=/dev/zero", f"of={small_disk / 'filler'}", "bs=64k", "count=64"], capture_output=True)
    out = hpo(["run", "experiment.toml", "--resume", "--results", str(results)], tmp_path, ranks=3)
    assert out.returncode == 3, out.output
    [line] = [line for line in out.stderr.splitlines() if line.startswith("hpc_hpo: error:")]
    assert re.fullmatch(rf"hpc_hpo: error: cannot write {small_disk}/results\.h5(\.lock)? \(No space left on device\); "
                        r"every trial stored before it is safe .*--resume", line), line
    assert "Traceback" not in out.output
    assert finished(results) == stored
    assert [r["trial_id"] for r in read_results(results).records() if r["status"] == "running"] == running
    (small_disk / "filler").unlink()
    again = hpo(["run", "experiment.toml", "--resume", "--results", str(results), "--trials", "8"], tmp_path, ranks=3)
    assert again.returncode == 0, again.output
    final = finished(results)
    assert len(final) == 8 and all(final[i] == row for i, row in stored.items())
    assert {r["trial_id"]: r["attempt"] for r in read_results(results).records() if r["trial_id"] in running} == \
        dict.fromkeys(running, 2)


FAILING_RUNS_ROW = """
import errno, sys
import h5py

resize = h5py.Dataset.resize

def resize_or_fail(self, *args, **kwargs):
    if self.name == "/runs":  # where start_run adds this job's row: the disk is full just then
        raise OSError(errno.ENOSPC, "No space left on device")
    return resize(self, *args, **kwargs)

h5py.Dataset.resize = resize_or_fail
from hpc_hpo.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_failed_write_when_a_resumed_run_starts_is_one_line_and_exit_3(tmp_path):
    """start_run used to sit outside the error handling: a full disk there was an internal error and a traceback."""
    results = tmp_path / "results.h5"
    stored = stopped_with_trials_to_run_again(tmp_path, results)
    running = [r["trial_id"] for r in read_results(results).records() if r["status"] == "running"]
    (tmp_path / "inject.py").write_text(FAILING_RUNS_ROW)
    out = run_command([sys.executable, "inject.py", "run", "experiment.toml", "--resume"], tmp_path, timeout=120)
    assert out.returncode == 3, out.output
    assert out.stderr.strip().splitlines()[-1] == (
        "hpc_hpo: error: cannot write results.h5 (No space left on device); every trial stored before it is safe "
        "(the next --resume recovers the file): free space or fix the mount, then run again with --resume")
    assert "Traceback" not in out.output
    assert finished(results) == stored
    assert [r["trial_id"] for r in read_results(results).records() if r["status"] == "running"] == running
    again = hpo(["run", "experiment.toml", "--resume", "--trials", "8"], tmp_path, ranks=3)
    assert again.returncode == 0 and len(finished(results)) == 8, again.output



def test_a_file_of_format_5_is_resumed_in_its_own_layout(tmp_path):
    """Format 6 narrowed /running (no error column) and added a /runs column: a search begun by the version before
    goes on, its trial left running is run again, and its datasets keep their columns."""
    write_experiment(tmp_path, experiment(trials=6, extra_phases=False), OBJECTIVE)
    assert hpo(["run", "experiment.toml"], tmp_path).returncode == 0
    path = tmp_path / "results.h5"
    with h5py.File(path, "r+") as file:  # rewritten as the version before wrote it
        trials = file["trials"][:]
        wide = np.zeros(2, trials.dtype)
        wide[0] = trials[-1]  # the last trial, as if it were still running when the job ended
        wide[0]["status"], wide[0]["value"] = b"running", np.nan
        runs = file["runs"][:]
        old_runs = np.zeros(len(runs), [(n, runs.dtype[n]) for n in runs.dtype.names if n != "master_wait_cpu_seconds"])
        for name in old_runs.dtype.names:
            old_runs[name] = runs[name]
        file["trials"].resize((len(trials) - 1,))
        file["metrics"].resize((len(trials) - 1, file["metrics"].shape[1]))
        del file["running"], file["runs"]
        file.create_dataset("running", data=wide, maxshape=(None,), chunks=(2,))
        file.create_dataset("runs", data=old_runs, maxshape=(None,), chunks=(16,))
        file.attrs["format_version"] = 5
    rerun = int(trials[-1]["trial_id"])

    result = hpo(["run", "experiment.toml", "--resume", "--trials", "9"], tmp_path)
    assert result.returncode == 0, result.stderr
    results = read_results(path)
    rows = results.records()
    assert sorted(r["trial_id"] for r in rows) == list(range(9))
    assert all(r["status"] in ("done", "failed") for r in rows)  # the objective fails for x > 4
    assert [r["attempt"] for r in rows if r["trial_id"] == rerun] == [2]
    with h5py.File(path, "r") as file:
        assert file.attrs["format_version"] == 5
        assert file["running"].dtype == trials.dtype and "master_wait_cpu_seconds" not in file["runs"].dtype.names
        assert [int(r["exit_code"]) for r in file["runs"][:]] == [0, 0]


def test_a_file_older_than_format_5_is_refused_on_every_rank_and_left_as_it_was(tmp_path):
    write_experiment(tmp_path, experiment(trials=4, extra_phases=False), OBJECTIVE)
    assert hpo(["run", "experiment.toml"], tmp_path).returncode == 0
    path = tmp_path / "results.h5"
    with h5py.File(path, "r+") as file:
        file.attrs["format_version"] = 4
    before = path.read_bytes()
    started = time.monotonic()
    out = hpo(["run", "experiment.toml", "--resume"], tmp_path, ranks=3, timeout=60)
    assert out.returncode == 2, out.output
    assert out.stderr.count("hpc_hpo: error: ") == 1, out.stderr
    assert ("results format 4 cannot be resumed by this hpc_hpo (it resumes formats 5, 6); it can still be read "
            "(status, export), but continue in a new --results file") in out.stderr
    assert "Traceback" not in out.output and time.monotonic() - started < 30
    assert path.read_bytes() == before
    assert len(read_results(path).records()) == 4  # still read


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v", "-s"]))
