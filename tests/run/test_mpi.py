"""Real ``mpirun`` runs with 1, 3 and 9 ranks (more ranks than cores: --oversubscribe)."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from hpc_hpo.results.reader import read_results

from conftest import base_env, hpo, mpirun_command, run_command, write_experiment
from experiments import OBJECTIVE, experiment

TIMEOUT = 180


@pytest.mark.parametrize("ranks", [1, 3, 9])
def test_every_trial_stored_once_on_every_worker(tmp_path, ranks):
    # Trials sleep a little so that every worker gets some before the budget is spent.
    write_experiment(tmp_path, experiment(trials=40, sleep=0.05), OBJECTIVE)
    out = hpo(["run", "experiment.toml"], tmp_path, ranks=ranks, timeout=TIMEOUT)
    assert out.returncode == 0, out.output
    assert "Traceback" not in out.output

    budget = 2 + 24 + 40
    with h5py.File(tmp_path / "results.h5", "r") as f:
        trials = f["trials"][:]
        assert np.all(f["running"]["status"][:] == b"")  # nothing left running
        assert f.attrs["world_size"] == ranks
        # Parameters are stored with their own types: floats, integers, strings.
        assert trials.dtype["param_x"].kind == "f" and trials.dtype["param_units"].kind == "i"
        assert trials.dtype["param_act"].kind == "S"
    assert sorted(trials["trial_id"].tolist()) == list(range(budget))  # every trial exactly once
    assert np.all((trials["param_x"] >= -5) & (trials["param_x"] <= 5))
    assert np.all((trials["param_lr"] >= 1e-5) & (trials["param_lr"] <= 1e-1))
    assert np.all((trials["param_units"] >= 16) & (trials["param_units"] <= 512))
    assert set(trials["param_act"].tolist()) <= {b"relu", b"tanh", b"nan"}

    workers = {0} if ranks == 1 else set(range(1, ranks))
    assert set(trials["rank"].tolist()) == workers  # every worker rank was used

    rows = read_results(tmp_path / "results.h5").records()
    failed = [r for r in rows if r["status"] == "failed"]
    assert failed and all("(rank " in r["error"] and " on " in r["error"] for r in failed)
    assert rows[0]["status"] == "failed" and rows[0]["error"].startswith("ValueError: x too large")
    assert all(math.isfinite(r["value"]) for r in rows if r["status"] == "done")
    # The objective's own record of where it ran agrees with the row.
    assert all(r["metric_rank"] == r["rank"] for r in rows if r["status"] == "done")
    assert all(r["t_submit"] <= r["t_start"] + 1 and r["t_start"] <= r["t_end"] for r in rows)
    # The run's cost: the master's CPU time, and within it what went to looking for messages that had not come.
    (run,) = read_results(tmp_path / "results.h5").runs
    assert run["workers"] == max(1, ranks - 1) and run["trials"] == budget and run["exit_code"] == 0
    assert 0 < run["master_cpu_seconds"] < 2 * run["loop_seconds"]
    assert 0 <= run["master_wait_cpu_seconds"] < run["master_cpu_seconds"]
    if ranks > 1:  # it waited for the workers' results, the trials sleeping
        assert run["master_wait_cpu_seconds"] > 0


BAD_SPACE = experiment().replace('low = -5.0, high = 5.0', 'low = 5.0, high = -5.0')
UNKNOWN_KEY = experiment().replace('seed = 1', 'seed = 1\nworkers = 8')


@pytest.mark.parametrize("body, objective, message", [
    (BAD_SPACE, OBJECTIVE, "space.x: 'low' must be < 'high' (got low=5.0, high=-5.0)"),
    (UNKNOWN_KEY, OBJECTIVE, "experiment.workers: unknown key (allowed: "),
    (experiment(), "import no_such_package\n",
     "experiment.objective: cannot import 'objective.py:objective' (ModuleNotFoundError: No module named "
     "'no_such_package') on rank 1"),
    (experiment(results="missing/results.h5"), OBJECTIVE,
     "experiment.results: directory 'missing' does not exist; create it first (got 'missing/results.h5')"),
    (experiment().replace('"explicit"', '"explicitly"'), OBJECTIVE, "phase[1].strategy: unknown strategy"),
    (experiment() + '\n[[phase]]\nstrategy = "bayes"\ntrials = 5\nacquisition = "thompson"\n', OBJECTIVE,
     "phase[4].acquisition: unknown acquisition (allowed: ei, ucb, pi) (got 'thompson')"),
])
def test_bad_input_exits_2_on_every_rank_with_one_line(tmp_path, body, objective, message):
    write_experiment(tmp_path, body, objective)
    started = time.monotonic()
    out = hpo(["run", "experiment.toml"], tmp_path, ranks=3, timeout=60)
    elapsed = time.monotonic() - started
    assert out.returncode == 2, out.output
    assert out.stderr.count("hpc_hpo: error: ") == 1 and message in out.stderr, out.stderr
    assert "Traceback" not in out.output
    assert elapsed < 30  # seconds, not a hang (generous: shared CI machines are slow)
    assert not (tmp_path / "results.h5").exists()  # no trial ran, no file was made


def test_existing_results_file_is_left_alone_under_mpirun(tmp_path):
    write_experiment(tmp_path, experiment(trials=3, extra_phases=False), OBJECTIVE)
    (tmp_path / "results.h5").write_bytes(b"precious")
    out = hpo(["run", "experiment.toml"], tmp_path, ranks=3, timeout=60)
    assert out.returncode == 2 and "already exists; pass --resume to continue it, --overwrite" in out.stderr
    assert (tmp_path / "results.h5").read_bytes() == b"precious"


def test_broken_objective_ends_every_rank_with_exit_1(tmp_path):
    write_experiment(tmp_path, experiment(trials=100, extra_phases=False), "def objective(p):\n    raise KeyError('lr')\n")
    out = hpo(["run", "experiment.toml"], tmp_path, ranks=3, timeout=60)
    assert out.returncode == 1, out.output
    assert "the first 10 trials all failed; the objective looks broken. Last error: KeyError: 'lr'" in out.stderr
    rows = read_results(tmp_path / "results.h5").records()
    assert 10 <= len(rows) <= 12 and all(r["status"] == "failed" for r in rows)


def test_a_worker_that_dies_ends_the_job_instead_of_hanging(tmp_path):
    objective = OBJECTIVE + "\n\nimport os\n_objective = objective\n\ndef killer(params, trial):\n" \
        "    if trial.trial_id == 12:\n        os._exit(7)\n    return _objective(params, trial)\n"
    write_experiment(tmp_path, experiment(trials=200, sleep=0.02).replace("objective.py:objective", "objective.py:killer"),
                     objective)
    out = hpo(["run", "experiment.toml"], tmp_path, ranks=3, timeout=60)
    assert out.returncode != 0
    # What was stored before the crash is still readable.
    rows = read_results(tmp_path / "results.h5").records()
    assert 0 < len(rows) < 2 + 24 + 200


def test_results_can_be_read_while_the_run_writes_them(tmp_path):
    write_experiment(tmp_path, experiment(trials=30, sleep=0.25, extra_phases=False), OBJECTIVE)
    proc = subprocess.Popen(mpirun_command(3, ["run", "experiment.toml"]), cwd=tmp_path, env=base_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = []  # (finished, running) as the reader saw them
    status_outputs = []
    deadline = time.monotonic() + TIMEOUT
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if (tmp_path / "results.h5").exists():
                with h5py.File(tmp_path / "results.h5", "r", swmr=True) as f:  # plain h5py, as docs/results-file.md says
                    finished = f["trials"].shape[0]
                    running = int(np.sum(f["running"]["status"][:] == b"running"))
                seen.append((finished, running))
                if 0 < finished < 30 and len(status_outputs) < 2:
                    status = subprocess.run([sys.executable, "-m", "hpc_hpo", "status", "results.h5"], cwd=tmp_path,
                                            capture_output=True, text=True, timeout=60)
                    status_outputs.append(status)
            time.sleep(0.2)
        output, _ = proc.communicate(timeout=max(1, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    mid_run = [(f, r) for f, r in seen if 0 < f < 30]
    assert mid_run, f"never saw a partly finished search: {seen}"
    assert any(r > 0 for _, r in mid_run)
    assert [f for f, _ in seen] == sorted(f for f, _ in seen)  # the count only grows
    assert status_outputs and status_outputs[0].returncode == 0
    assert "running     trial" in status_outputs[0].stdout
    assert re.search(r"^run 0 .*\(2 workers\), running$", status_outputs[0].stdout, re.M), status_outputs[0].stdout
    assert len(read_results(tmp_path / "results.h5").records()) == 30


INJECT = """
import sys
from hpc_hpo.run import scheduler, worker

def boom(*args):
    raise RuntimeError("injected fault")

if sys.argv[1] == "master":
    scheduler.Scheduler._on_result = boom
else:
    worker.Worker.run_task = boom
from hpc_hpo.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("where", ["master", "worker"])
def test_an_internal_error_aborts_every_rank(tmp_path, where):
    """A bug in hpc_hpo itself (injected here) must end the whole job, not leave ranks waiting."""
    write_experiment(tmp_path, experiment(trials=50, extra_phases=False), OBJECTIVE)
    (tmp_path / "inject.py").write_text(INJECT)
    cmd = mpirun_command(3, ["run", "experiment.toml"])
    cmd[cmd.index("-m"):cmd.index("run")] = ["inject.py", where]
    started = time.monotonic()
    out = run_command(cmd, tmp_path, timeout=60)
    assert out.returncode != 0
    assert "internal error on rank" in out.stderr and "RuntimeError: injected fault" in out.stderr
    assert time.monotonic() - started < 30
    if where == "master":  # the master still closed its file cleanly before aborting
        assert read_results(tmp_path / "results.h5").runs[0]["exit_code"] == 1
