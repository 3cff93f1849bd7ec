"""Early stopping end to end: real mpirun, real files; the rule's verdicts reach the trials at once.

The objective (``light_objectives:learning_curve``) reports ``val_loss`` after every epoch and
checks ``trial.should_stop()`` right after; a trial the rule stops must end at the rung where it
was judged (its last reported epoch is that rung), every other trial trains ``max_epochs``.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from hpc_hpo import read_results
from hpc_hpo.search.stopping import Asha, Report

from conftest import base_env, hpo, mpirun_command, write_experiment

TESTS = Path(__file__).resolve().parent.parent


def stopping_experiment(trials=60, rule="asha", delay=0.002, executor="inline", extra="", results="results.h5",
                        strategy="random"):
    return f"""
[experiment]
objective = "light_objectives:learning_curve"
results = "{results}"
seed = 3

[space]
x = {{ type = "float", low = 0.0, high = 1.0 }}
y = {{ type = "float", low = 0.0, high = 1.0 }}
lr = {{ type = "float", low = 1e-4, high = 1e-1, log = true }}
delay = {{ type = "fixed", value = {delay} }}

[[phase]]
strategy = "{strategy}"
trials = {trials}

[workers]
executor = "{executor}"

[stopping]
rule = "{rule}"
metric = "val_loss"
min_epochs = 1
max_epochs = 27
reduction_factor = 3
{extra}
"""


ENV = {"PYTHONPATH": os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)}


def last_epochs(results) -> dict[int, int]:
    """Per trial, the last epoch its last attempt reported + 1, from /epochs."""
    started = {r["trial_id"]: r["t_start"] for r in results.records()}
    last: dict[int, int] = {}
    for row in results.epochs:
        if row["time"] < started[int(row["trial_id"])]:
            continue  # an earlier attempt, cut short by a kill
        last[int(row["trial_id"])] = max(last.get(int(row["trial_id"]), 0), int(row["epoch"]) + 1)
    return last


def check_stopped_at_their_rungs(results, rungs=(1, 3, 9), max_epochs=27) -> collections.Counter:
    rows = results.records()
    last = last_epochs(results)
    counts = collections.Counter()
    for r in rows:
        assert r["epochs"] == last[r["trial_id"]], r  # the column says how far it trained
        if r["status"] == "pruned":
            assert r["epochs"] in rungs, r  # it ended at the rung where it was judged: no epoch after the verdict
            assert np.isfinite(r["value"])  # it returned what it had
        else:
            assert r["status"] == "done" and r["epochs"] == max_epochs, r
        counts[(r["status"], r["epochs"])] += 1
    return counts


@pytest.mark.parametrize("ranks, executor", [(9, "inline"), (3, "process"), (None, "inline")])
def test_pruned_trials_end_at_the_rung_of_the_decision_and_the_rest_reach_max_epochs(tmp_path, ranks, executor):
    trials = 60 if executor == "inline" else 24
    write_experiment(tmp_path, stopping_experiment(trials=trials, executor=executor))
    out = hpo(["run", "experiment.toml"], tmp_path, ranks=ranks, timeout=240, env=ENV)
    assert out.returncode == 0, out.output
    results = read_results(tmp_path / "results.h5")
    counts = check_stopped_at_their_rungs(results)
    pruned = sum(n for (status, _), n in counts.items() if status == "pruned")
    done = sum(n for (status, _), n in counts.items() if status == "done")
    assert pruned + done == trials and pruned >= trials // 2 and done >= 1, counts
    assert counts[("pruned", 1)] >= 1
    spent = sum(r["epochs"] for r in results.records())
    assert spent < 0.5 * trials * 27  # the point of it
    assert f"{pruned} pruned" in out.output  # the closing progress line counts them
    status = hpo(["status", "results.h5"], tmp_path, timeout=60)
    assert f"pruned {pruned}" in status.stdout and "stopping    asha on val_loss: " in status.stdout, status.stdout
    assert f"{spent} epochs trained" in status.stdout
    best = read_results(tmp_path / "results.h5")
    done_values = [r["value"] for r in best.records() if r["status"] == "done"]
    shown = hpo(["best", "results.h5"], tmp_path, timeout=60)
    exported = hpo(["export", "results.h5", "--format", "csv"], tmp_path, timeout=60).stdout.splitlines()
    header = exported[0].split(",")
    column = header.index("epochs")
    assert sorted(int(line.split(",")[column]) for line in exported[1:]) == sorted(r["epochs"] for r in results.records())
    # The best is chosen among the trials that ran to the end, and says how long it trained.
    assert f"value {min(done_values):.10g} (minimize), 27 epochs" in shown.stdout, shown.stdout


def test_median_and_hyperband_under_mpirun(tmp_path):
    write_experiment(tmp_path, stopping_experiment(trials=40, rule="hyperband", extra="brackets = 2"))
    out = hpo(["run", "experiment.toml"], tmp_path, ranks=5, timeout=240, env=ENV)
    assert out.returncode == 0, out.output
    counts = check_stopped_at_their_rungs(read_results(tmp_path / "results.h5"))
    assert counts[("pruned", 3)] >= 1  # the second bracket judges first after 3 epochs

    write_experiment(tmp_path / "median", stopping_experiment(trials=30, rule="median", extra="min_epochs = 3")
                     .replace("min_epochs = 1\n", ""))
    out = hpo(["run", "experiment.toml"], tmp_path / "median", ranks=5, timeout=240, env=ENV)
    assert out.returncode == 0, out.output
    rows = read_results(tmp_path / "median" / "results.h5").records()
    pruned = [r for r in rows if r["status"] == "pruned"]
    assert pruned and all(3 <= r["epochs"] < 27 for r in pruned)
    assert all(r["epochs"] == 27 for r in rows if r["status"] == "done")


def test_a_bayesian_search_with_stopping_learns_from_pruned_trials(tmp_path):
    body = stopping_experiment(trials=8, strategy="sobol") + '\n[[phase]]\nstrategy = "bayes"\ntrials = 16\n'
    body = body.replace('[workers]', '[workers]\nmax_trials_per_process = 50')
    # The bayes phase comes after [stopping] in the text: TOML puts it in the phase array all the same.
    write_experiment(tmp_path, body)
    out = hpo(["run", "experiment.toml"], tmp_path, ranks=4, timeout=240, env=ENV)
    assert out.returncode == 0, out.output
    rows = read_results(tmp_path / "results.h5").records()
    bayes = [r for r in rows if r["strategy"] == "bayes"]
    assert len(bayes) == 16 and all(np.isfinite(r["suggest_seconds"]) for r in bayes)
    assert any(r["status"] == "pruned" for r in rows)
    keys = {(r["param_x"], r["param_y"], r["param_lr"]) for r in rows}
    assert len(keys) == len(rows)  # no point twice


def test_resume_after_kill_rebuilds_the_rungs_and_judges_reruns_afresh(tmp_path):
    results = tmp_path / "results.h5"  # its path tells this job's ranks from any other's
    write_experiment(tmp_path, stopping_experiment(trials=60, delay=0.03))
    env = {**base_env(), **ENV}
    proc = subprocess.Popen(mpirun_command(5, ["run", "experiment.toml", "--results", str(results)]), cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill once some trials finished and others run
        time.sleep(0.3)
        if results.exists():
            try:
                with h5py.File(results, "r", swmr=True, locking=False) as file:
                    if len(file["trials"]) >= 15:
                        break
            except OSError:
                pass
    os.killpg(proc.pid, signal.SIGKILL)  # mpirun, and every rank (they may sit in process groups of their own)
    subprocess.run(["pkill", "-9", "-f", str(results)], check=False)
    proc.wait(30)
    first = read_results(results)
    finished_first = {int(t) for t in first.trials["trial_id"][: first.finished_rows]}
    assert 15 <= len(finished_first) < 60

    out = hpo(["run", "experiment.toml", "--resume", "--results", str(results)], tmp_path, ranks=5, timeout=240,
              env=ENV)
    assert out.returncode == 0, out.output
    final = read_results(results)
    rows = {r["trial_id"]: r for r in final.records()}
    assert sorted(rows) == list(range(60))
    check_stopped_at_their_rungs(final)
    second_start = float(final.runs[1]["t_start"])
    # What the second job decided must follow from the rungs rebuilt from the first job's finished trials
    # (a trial killed while running is judged afresh: its first attempt's reports do not count) plus its own.
    rule = Asha(1, 27, 3)
    for row in final.epochs[final.epochs["name"] == b"val_loss"]:
        trial_id, when = int(row["trial_id"]), float(row["time"])
        if when < second_start and trial_id not in finished_first:
            continue  # a report of an attempt the kill cut short
        rule.handle(Report(trial_id, int(row["epoch"]), float(row["value"])))
    judged_second = [t for t in rows if t not in finished_first]
    assert judged_second
    for trial_id in judged_second:
        r = rows[trial_id]
        expected = rule.stopped_at.get(trial_id)
        assert (r["status"] == "pruned") == (expected is not None), r
        if expected is not None:
            assert r["epochs"] == expected
    reruns = [r for r in rows.values() if r["attempt"] == 2]
    assert reruns, "the kill left no trial running"


@pytest.mark.parametrize("table, message", [
    ('rule = "asa"\nmetric = "val_loss"\nmax_epochs = 27',
     "stopping.rule: unknown rule (allowed: none, asha, hyperband, median) (got 'asa')"),
    ('rule = "asha"\nmetric = "val_loss"\nmin_epochs = 5\nmax_epochs = 3',
     "stopping.max_epochs: must be >= min_epochs (got max_epochs = 3, min_epochs = 5)"),
    ('rule = "asha"\nmetric = "val_loss"\nmax_epochs = 27\nreduction_factor = 1',
     "stopping.reduction_factor: must be a number > 1 (got 1)"),
    ('rule = "asha"\nmax_epochs = 27', "stopping.metric: is required"),
    ('rule = "median"\nmetric = "val_loss"\nmax_epochs = 27\nbrackets = 2',
     'stopping.brackets: only rule = "hyperband" has brackets (got rule = \'median\')'),
])
def test_bad_stopping_tables_exit_2_on_every_rank_with_one_line(tmp_path, table, message):
    body = stopping_experiment().split("[stopping]")[0] + "[stopping]\n" + table + "\n"
    write_experiment(tmp_path, body)
    out = hpo(["run", "experiment.toml"], tmp_path, ranks=3, timeout=60, env=ENV)
    assert out.returncode == 2, out.output
    assert out.stderr.count("hpc_hpo: error: ") == 1 and message in out.stderr, out.stderr
    assert "Traceback" not in out.output and not (tmp_path / "results.h5").exists()


def test_repeats_with_stopping_are_refused(tmp_path):
    body = stopping_experiment().replace("seed = 3", "seed = 3\nrepeats = 2")
    write_experiment(tmp_path, body)
    out = hpo(["run", "experiment.toml"], tmp_path, timeout=60, env=ENV)
    assert out.returncode == 2 and "stopping.rule: early stopping cannot be combined with repeats" in out.stderr


def test_a_metric_never_reported_is_a_warning_after_the_first_finished_trial(tmp_path):
    write_experiment(tmp_path, stopping_experiment(trials=3).replace('metric = "val_loss"', 'metric = "val_acc"'))
    out = hpo(["run", "experiment.toml"], tmp_path, timeout=60, env=ENV)
    assert out.returncode == 0, out.output
    assert out.stderr.count("stopping.metric: trial 0 reported 27 epochs but never 'val_acc'") == 1, out.stderr
    assert "(got val_loss;" in out.stderr
    assert all(r["status"] == "done" for r in read_results(tmp_path / "results.h5").records())


def test_check_says_where_the_rule_judges(tmp_path):
    write_experiment(tmp_path, stopping_experiment(rule="hyperband", extra="brackets = 2"))
    out = hpo(["check", "experiment.toml"], tmp_path, timeout=60, env=ENV)
    assert out.returncode == 0, out.output
    assert "# ok: 60 trials (random 60); hyperband (2 brackets) on val_loss judges after 1, 3, 9 epochs of 27" in out.stderr
    assert '[stopping]\nrule = "hyperband"' in out.stdout
