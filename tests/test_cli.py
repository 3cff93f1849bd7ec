"""The command line in one process (no MPI): run, status, export, check, and bad input."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import time

import h5py
import pytest

from hpc_hpo.results.reader import read_results

from conftest import REPO, hpo, write_experiment
from experiments import OBJECTIVE, experiment


@pytest.fixture
def finished_run(tmp_path):
    write_experiment(tmp_path, experiment(trials=20), OBJECTIVE)
    done = hpo(["run", "experiment.toml"], tmp_path)
    assert done.returncode == 0, done.output
    return tmp_path, done


def test_one_process_run_covers_every_phase(finished_run):
    tmp_path, done = finished_run
    rows = read_results(tmp_path / "results.h5").records()
    # explicit 2 + grid 2*2*2*3 acts + random 20
    assert [r["trial_id"] for r in rows] == list(range(2 + 24 + 20))
    assert {r["rank"] for r in rows} == {0}  # master and worker in one process
    assert [r["strategy"] for r in rows[:3]] == ["explicit", "explicit", "grid"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert rows[0]["status"] == "failed" and rows[0]["error"].startswith("ValueError: x too large: 4.500 (rank 0 on ")
    assert any("ObjectiveResultError: returned nan" in r["error"] for r in failed)
    assert all(r["status"] == "done" and math.isfinite(r["value"]) for r in rows if r not in failed)
    assert rows[1]["metric_trial"] == 1.0
    assert "Traceback" not in done.output
    assert "finished: 46/46 finished" in done.stderr


def test_status_reports_counts_and_best(finished_run):
    tmp_path, _ = finished_run
    out = hpo(["status", "results.h5"], tmp_path)
    assert out.returncode == 0, out.output
    rows = read_results(tmp_path / "results.h5").records()
    done = [r for r in rows if r["status"] == "done"]
    best = min(done, key=lambda r: r["value"])
    failed = len(rows) - len(done)
    assert "experiment  e2e (minimize)" in out.stdout
    assert f"trials      46 of 46 finished; done {len(done)}, failed {failed}" in out.stdout
    assert f"best        trial {best['trial_id']}: {best['value']:.6g}" in out.stdout
    assert "exit code 0" in out.stdout
    assert re.search(r"^pace        \d+ trials/h in the last run$", out.stdout, re.M)
    workers = re.search(r"^workers     rank  host +trials  busy\n +0 +\S+ +46 +(\d+)%$", out.stdout, re.M)
    assert workers and 0 < int(workers.group(1)) <= 100, out.stdout


def test_status_json_says_what_the_text_says(finished_run):
    tmp_path, _ = finished_run
    out = hpo(["status", "results.h5", "--json"], tmp_path)
    assert out.returncode == 0, out.output
    state = json.loads(out.stdout)
    rows = read_results(tmp_path / "results.h5").records()
    done = [r for r in rows if r["status"] == "done"]
    best = min(done, key=lambda r: r["value"])
    assert state["experiment"] == "e2e" and state["direction"] == "minimize" and state["state"] == "ended"
    assert state["budget"] == state["finished"] == 46 and state["running"] == []
    assert state["counts"] == {"done": len(done), "failed": len(rows) - len(done)}
    assert state["best"]["trial_id"] == best["trial_id"] and state["best"]["value"] == best["value"]
    assert state["best"]["params"] == {"x": best["param_x"], "lr": best["param_lr"], "units": best["param_units"],
                                       "act": best["param_act"], "sleep": 0.0}
    assert state["pace"]["trials_per_hour"] > 0 and state["pace"]["seconds_left"] is None  # it has ended
    assert [(w["rank"], w["trials"]) for w in state["workers"]] == [(0, 46)] and 0 < state["workers"][0]["busy"] <= 1
    (run,) = state["runs"]
    assert run["state"] == "ended" and run["exit_code"] == 0 and run["ended"] >= run["started"] > 1.7e9


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_status_watch_follows_a_running_search_and_stops_when_it_ends(tmp_path, as_json):
    import subprocess
    import sys

    from conftest import base_env, mpirun_command

    write_experiment(tmp_path, experiment(trials=30, sleep=0.2, extra_phases=False), OBJECTIVE)
    proc = subprocess.Popen(mpirun_command(3, ["run", "experiment.toml"]), cwd=tmp_path, env=base_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "results.h5").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        # every 0.2 s: a busy machine may take seconds to start the watch, when the 3 s search is half done
        watch = subprocess.run([sys.executable, "-m", "hpc_hpo", "status", "results.h5", "--watch", "0.2",
                                *(["--json"] if as_json else [])],
                               cwd=tmp_path, env=base_env(), capture_output=True, text=True, timeout=120)
    finally:
        proc.wait(timeout=120)
    assert watch.returncode == 0, watch.stderr
    if as_json:  # one JSON object per line, the last one when the search has ended
        states = [json.loads(line) for line in watch.stdout.splitlines()]
        assert len(states) >= 3, watch.stdout
        first, last = states[0], states[-1]
        assert first["state"] == "running" and first["running"] and first["running"][0]["gpus"].startswith("cpu")
        assert all(0 <= r["age_seconds"] < 60 for r in first["running"])
        assert any(s["pace"] and s["pace"]["seconds_left"] for s in states[:-1])
        assert last["state"] == "ended" and last["finished"] == 30 and last["runs"][-1]["exit_code"] == 0
        return
    reports = watch.stdout.split("experiment  e2e")[1:]
    assert len(reports) >= 3, watch.stdout
    assert "running     trial    rank  host                  gpus      age" in reports[0]
    assert "cpu" in reports[0] and "left" in "".join(reports[:-1])
    assert "30 of 30 finished" in reports[-1] and "exit code 0" in reports[-1]


def test_export_csv_and_json(finished_run):
    tmp_path, _ = finished_run
    assert hpo(["export", "results.h5", "--format", "csv", "-o", "out.csv"], tmp_path).returncode == 0
    table = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text())))
    assert len(table) == 46
    assert list(table[0])[:7] == ["trial_id", "status", "value", "param_x", "param_lr", "param_units", "param_act"]
    assert "metric_rank" in table[0] and "error" in table[0]
    assert table[0]["status"] == "failed" and table[0]["value"] == ""

    rows = json.loads(hpo(["export", "results.h5", "--format", "json"], tmp_path).stdout)
    assert len(rows) == 46 and rows[0]["value"] is None and isinstance(rows[1]["param_units"], int)
    stdout_csv = hpo(["export", "results.h5"], tmp_path).stdout
    assert stdout_csv.splitlines()[0].startswith("trial_id,status,value,param_x")


def test_same_seed_same_search(tmp_path):
    for name in ("a", "b"):
        write_experiment(tmp_path / name, experiment(trials=10, seed=42, extra_phases=False), OBJECTIVE)
        assert hpo(["run", "experiment.toml"], tmp_path / name).returncode == 0
    a, b = (read_results(tmp_path / n / "results.h5").records() for n in ("a", "b"))
    keys = ["trial_id", "status", "value", "param_x", "param_lr", "param_units", "param_act"]
    def table(rows):  # NaN (the value of a failed trial) never equals itself; compare it as None
        return [[None if isinstance(r[k], float) and math.isnan(r[k]) else r[k] for k in keys] for r in rows]

    assert table(a) == table(b)


def test_flags_override_the_file_and_the_resolved_config_is_stored(tmp_path):
    write_experiment(tmp_path, experiment(trials=50, extra_phases=False), OBJECTIVE)
    out = hpo(["run", "experiment.toml", "--trials", "5", "--seed", "9", "--results", "other.h5"], tmp_path)
    assert out.returncode == 0, out.output
    assert not (tmp_path / "results.h5").exists()
    assert len(read_results(tmp_path / "other.h5").records()) == 5
    with h5py.File(tmp_path / "other.h5", "r") as f:
        config = f.attrs["config"]
        assert 'results = "other.h5"' in config and "seed = 9" in config and "trials = 5" in config
        assert f.attrs["seed"] == 9 and f.attrs["budget"] == 5 and f.attrs["world_size"] == 1
        assert f.attrs["experiment_file"] == str(tmp_path / "experiment.toml")


def test_seed_is_drawn_and_stored_when_not_given(tmp_path):
    write_experiment(tmp_path, experiment(trials=3, extra_phases=False).replace("seed = 1\n", ""), OBJECTIVE)
    assert hpo(["run", "experiment.toml"], tmp_path).returncode == 0
    with h5py.File(tmp_path / "results.h5", "r") as f:
        assert f.attrs["seed"] >= 0 and f"seed = {f.attrs['seed']}" in f.attrs["config"]


def test_existing_results_are_refused_then_overwritten_on_request(finished_run):
    tmp_path, _ = finished_run
    before = (tmp_path / "results.h5").read_bytes()
    refused = hpo(["run", "experiment.toml"], tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.strip() == ("hpc_hpo: error: experiment.results: 'results.h5' already exists; pass "
                                      "--resume to continue it, --overwrite to replace it, or choose another "
                                      "--results (got 'results.h5')")
    assert (tmp_path / "results.h5").read_bytes() == before
    again = hpo(["run", "experiment.toml", "--overwrite", "--trials", "3"], tmp_path)
    assert again.returncode == 0 and len(read_results(tmp_path / "results.h5").records()) == 2 + 24 + 3


def test_broken_objective_stops_with_a_clear_error(tmp_path):
    write_experiment(tmp_path, experiment(trials=50, extra_phases=False),
                     "def objective(params):\n    return 1 / 0\n")
    out = hpo(["run", "experiment.toml"], tmp_path)
    assert out.returncode == 1
    assert ("hpc_hpo: error: the first 10 trials all failed; the objective looks broken. Last error: "
            "ZeroDivisionError: division by zero (rank 0 on ") in out.stderr
    rows = read_results(tmp_path / "results.h5").records()
    assert len(rows) == 10 and all(r["status"] == "failed" for r in rows)


def test_check_validates_and_prints_the_resolved_experiment(tmp_path):
    write_experiment(tmp_path, experiment(trials=7), OBJECTIVE)
    out = hpo(["check", "experiment.toml"], tmp_path)
    assert out.returncode == 0, out.output
    assert out.stdout.startswith("[experiment]\nname = \"e2e\"")
    assert "# ok: 33 trials (explicit 2, grid 24, random 7)" in out.stderr
    broken = hpo(["check"], tmp_path / "..")  # the built-in default experiment
    assert broken.returncode == 0 and "digits_mlp" in broken.stdout


@pytest.mark.parametrize("args, message", [
    (["run", "--bogus"], "hpc_hpo: error: unrecognized arguments: --bogus"),
    (["run", "--trials", "many"], "hpc_hpo: error: argument --trials: invalid int value: 'many'"),
    (["run", "--progress-every", "0"], "hpc_hpo: error: argument --progress-every: must be seconds (10, 10s) or a "
                                         "whole number of finished trials (25t), > 0 (got '0')"),
    (["run", "--startup-timeout", "-3"], "hpc_hpo: error: argument --startup-timeout: must be >= 0 (0 turns it off) "
                                         "(got '-3')"),
    (["launch"], "hpc_hpo: error: argument COMMAND: invalid choice: 'launch'"),
    (["run", "missing.toml"], "hpc_hpo: error: missing.toml: no such experiment file"),
    (["status", "missing.h5"], "hpc_hpo: error: missing.h5: no such results file"),
    (["export", "x.h5", "-o", "out.xlsx"], "hpc_hpo: error: --format: cannot tell the format from 'out.xlsx'"),
])
def test_bad_command_lines_are_one_line_and_exit_2(tmp_path, args, message):
    out = hpo(args, tmp_path)
    assert out.returncode == 2
    assert out.stderr.startswith(message) and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_help_documents_every_command(tmp_path):
    out = hpo(["--help"], tmp_path)
    assert out.returncode == 0
    for word in ("run", "check", "status", "export", "exit codes"):
        assert word in out.stdout
    run_help = hpo(["run", "--help"], tmp_path).stdout
    for flag in ("--results", "--seed", "--trials", "--overwrite", "--progress-every", "--verbose", "--quiet"):
        assert flag in run_help


def test_the_griewank_example_runs_from_anywhere(tmp_path):
    out = hpo(["run", str(REPO / "examples/griewank/experiment.toml")], tmp_path)
    assert out.returncode == 0, out.output
    rows = read_results(tmp_path / "griewank.h5").records()
    assert len(rows) == 1 + 108 + 100 and all(r["status"] == "done" for r in rows)
    assert rows[0]["param_act"] == "relu" and rows[0]["param_bs"] == 64
    assert min(r["value"] for r in rows) < 0.1


def test_ctrl_c_keeps_every_finished_trial_and_resume_finishes_the_search(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from conftest import base_env

    write_experiment(tmp_path, experiment(trials=500, sleep=0.05, extra_phases=False), OBJECTIVE)
    # As from a terminal: a suite started in the background (`cmd &`) hands its children an ignored SIGINT.
    proc = subprocess.Popen([sys.executable, "-m", "hpc_hpo", "run", "experiment.toml"], cwd=tmp_path, env=base_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (tmp_path / "results.h5").exists() and \
                    sum(r["status"] != "running" for r in read_results(tmp_path / "results.h5").records()) >= 5:
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 3, err  # resumable
    results = read_results(tmp_path / "results.h5")
    finished = [r for r in results.records() if r["status"] != "running"]
    running = [r for r in results.records() if r["status"] == "running"]
    # Ctrl-C in a trial interrupts it (it runs again on resume); in the moment between two trials it
    # lets the finished one be stored and starts no other. Either way nothing finished is lost.
    assert len(running) <= 1
    noun = "trial" if len(running) == 1 else "trials"
    assert "got SIGINT: stopping; " in err and f"{len(running)} running {noun} (" in err
    assert ") will run again on --resume" in err
    assert 5 <= len(finished) < 40
    assert sorted(r["trial_id"] for r in finished + running) == list(range(len(finished) + len(running)))
    assert results.runs[0]["exit_code"] == 3 and results.runs[0]["trials"] == len(finished)

    resumed = hpo(["run", "experiment.toml", "--resume", "--trials", "60"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    rows = read_results(tmp_path / "results.h5").records()
    assert len(rows) == 60 and sorted(r["trial_id"] for r in rows) == list(range(60))
    for interrupted in running:  # run again, with the same parameters
        assert {k: v for k, v in rows[interrupted["trial_id"]].items() if k.startswith("param_")} == \
            {k: v for k, v in interrupted.items() if k.startswith("param_")}
    assert [r["attempt"] for r in rows if r["attempt"] != 1] == [2] * len(running)
    assert [(r["trial_id"], r["status"], repr(r["value"])) for r in rows[: len(finished)]] == \
        [(r["trial_id"], r["status"], repr(r["value"])) for r in finished]  # kept as they were


def run_in_terminal(args: list[str], cwd, timeout: float = 120) -> tuple[int, str]:
    """``python -m hpc_hpo ARGS`` with a pseudo-terminal as its stdout and stderr, as a user at a shell."""
    import os
    import pty
    import select
    import sys

    from conftest import base_env

    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes the command
        os.chdir(cwd)
        os.execve(sys.executable, [sys.executable, "-m", "hpc_hpo", *args], base_env())
    output, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 0.5)[0]:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the command ended
                break
            if not data:
                break
            output += data
    else:
        os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def test_on_a_terminal_the_master_shows_a_bar_instead_of_summary_lines(tmp_path):
    write_experiment(tmp_path, experiment(trials=40, sleep=0.1, extra_phases=False), OBJECTIVE)
    code, output = run_in_terminal(["run", "experiment.toml", "--progress-every", "1"], tmp_path)
    assert code == 0, output
    frames = re.findall(r"\r\x1b\[K(\[[#-]{24}\] [^\r\n]*)", output)
    assert len(frames) >= 3, output
    counts = [int(re.search(r"\] (\d+)/40", f).group(1)) for f in frames]
    assert counts == sorted(counts) and counts[-1] > counts[0]  # it moves forward
    assert all(re.match(r"\[#*-*\] \d+/40 finished \(\d+ failed\), \d+ running", f) for f in frames)
    lines = [line.split("\x1b[K")[-1] for line in output.replace("\r\n", "\n").split("\n")]
    summaries = [line for line in lines if re.match(r"\[r00 [\d:]+\] \d+/40 finished", line)]
    assert summaries == [], summaries  # the bar replaces the periodic lines
    assert "finished: 40/40 finished" in output and "new best" in output


def test_in_a_batch_log_the_master_writes_summary_lines_and_no_bar(tmp_path):
    write_experiment(tmp_path, experiment(trials=40, sleep=0.1, extra_phases=False), OBJECTIVE)
    out = hpo(["run", "experiment.toml", "--progress-every", "1"], tmp_path)
    assert out.returncode == 0 and "\r" not in out.stderr and "\x1b[K" not in out.stderr
    assert re.search(r"^\[r00 [\d:]+\] \d+/40 finished \(\d+ failed\), \d+ running", out.stderr, re.M)


@pytest.mark.parametrize("ranks", [None, 3])
def test_without_tensorflow_the_built_in_example_says_how_to_get_it(tmp_path, ranks):
    """After a plain `pip install hpc_hpo` (no [tf]): one line, exit 2, on every rank."""
    hidden = tmp_path / "no_tf"
    hidden.mkdir()
    (hidden / "sitecustomize.py").write_text("import sys\nsys.modules['tensorflow'] = None  # as if not installed\n")
    out = hpo(["run"], tmp_path, ranks=ranks, env={"PYTHONPATH": str(hidden)})
    assert out.returncode == 2, out.output
    errors = [line for line in out.stderr.splitlines() if line.startswith("hpc_hpo: error:")]
    assert errors == ["hpc_hpo: error: run: the built-in example experiment (a Keras MLP) needs TensorFlow: pip install "
                      "'hpc_hpo[tf]' ('hpc_hpo[tf-cpu]' without a GPU), or start a search of your own with python -m "
                      "hpc_hpo init"], out.output
    assert "Traceback" not in out.output and not list(tmp_path.glob("*.h5"))
