"""Population Based Training end to end: real mpirun, real HDF5 file, real checkpoints on disk.

The objective (``light_objectives:pbt_toy``) keeps its state (a loss, the epoch, the trial that saved it) in
``state.json`` in its checkpoint directory; it asserts that what it restores starts at its segment's first epoch,
and reports the trial whose checkpoint it restored as the metric ``restored``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import h5py
import pytest

from hpc_hpo import read_results
from hpc_hpo.results.checkpoints import checkpoint_dir

from conftest import base_env, hpo, mpirun_command, write_experiment

TESTS = Path(__file__).resolve().parent.parent
ENV = {"PYTHONPATH": os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)}


def pbt_experiment(population=4, interval=2, epochs=12, delay=0.0, lr='{ type = "float", low = 0.001, high = 1.0, '
                   'log = true }', extra="", executor="inline") -> str:
    return f"""\
        [experiment]
        objective = "light_objectives:pbt_toy"
        results = "results.h5"
        seed = 3

        [space]
        lr = {lr}
        delay = {{ type = "fixed", value = {delay} }}

        [[phase]]
        strategy = "pbt"
        population = {population}
        interval = {interval}
        epochs = {epochs}
        {extra}

        [workers]
        executor = "{executor}"
        """


def segments(path: Path) -> dict[int, dict]:
    return {r["trial_id"]: r for r in read_results(path).records()}


def check_lineage(rows: dict[int, dict], epochs: int, population: int) -> None:
    """Every segment restored its parent's checkpoint, started where its parent ended; every member got to the end."""
    done = {t: r for t, r in rows.items() if r["status"] == "done"}
    for r in done.values():
        assert r["metric_restored"] == r["parent"], r
        if r["parent"] >= 0:
            parent = rows[r["parent"]]
            assert parent["status"] == "done" and parent["end_epoch"] == r["start_epoch"], (r, parent)
        else:
            assert r["start_epoch"] == 0
        assert r["end_epoch"] - r["start_epoch"] in (2, epochs % 2 or 2)
        assert r["checkpoint_mb"] > 0
    last = {}
    for r in sorted(done.values(), key=lambda r: r["trial_id"]):
        last[r["member"]] = r
    assert sorted(last) == list(range(population))
    assert all(r["end_epoch"] == epochs for r in last.values())


def test_four_members_under_mpirun_keep_their_lineage_and_bound_the_checkpoints(tmp_path):
    write_experiment(tmp_path, pbt_experiment())
    out = hpo(["run", "experiment.toml"], tmp_path, ranks=5, env=ENV)
    assert out.returncode == 0, out.output
    rows = segments(tmp_path / "results.h5")
    check_lineage(rows, 12, 4)
    assert {r["rank"] for r in rows.values()} == {1, 2, 3, 4}  # every worker trained segments
    exploits = [r for r in rows.values() if r["parent"] >= 0 and rows[r["parent"]]["member"] != r["member"]]
    assert exploits, "no member ever copied another"
    for r in exploits:  # an exploit explores: values differ from the copied member's
        assert r["param_lr"] != rows[r["parent"]]["param_lr"]
    kept = sorted(p.name for p in (tmp_path / "results-trials" / "checkpoints").iterdir())
    assert 0 < len(kept) <= 2 * 4 + 1, kept
    best = min((r for r in rows.values() if r["status"] == "done"), key=lambda r: r["value"])
    assert checkpoint_dir(tmp_path / "results-trials", best["trial_id"]).name in kept

    status = hpo(["status", "results.h5"], tmp_path)
    assert status.returncode == 0, status.output
    assert "pbt" in status.output and "4 members" in status.output and "checkpoints" in status.output
    best_out = hpo(["best", "results.h5"], tmp_path)
    assert best_out.returncode == 0, best_out.output
    assert f"member {best['member']}" in best_out.output and "epochs 0-" in best_out.output


def test_sync_mode_trains_generations_in_lockstep(tmp_path):
    write_experiment(tmp_path, pbt_experiment(extra='mode = "sync"', delay=0.01))
    out = hpo(["run", "experiment.toml"], tmp_path, ranks=3, env=ENV)
    assert out.returncode == 0, out.output
    rows = sorted(segments(tmp_path / "results.h5").values(), key=lambda r: r["t_start"])
    check_lineage({r["trial_id"]: r for r in rows}, 12, 4)
    for r in rows:  # nothing of a generation starts before every segment of the one before ended
        earlier = [o for o in rows if o["end_epoch"] <= r["start_epoch"]]
        assert all(o["t_end"] <= r["t_start"] + 0.05 for o in earlier), r


def test_kill_9_mid_pbt_then_a_deleted_checkpoint_resumes_from_the_last_good_one(tmp_path):
    """Kill every rank mid-run, delete the checkpoint a running segment restored (a scratch purge between jobs),
    resume: that segment runs again and fails with a clear error, its member goes on from its last good checkpoint,
    nothing stored is lost, every member still gets to the end."""
    results = tmp_path / "results.h5"
    write_experiment(tmp_path, pbt_experiment(epochs=20, delay=0.02))
    proc = subprocess.Popen(mpirun_command(5, ["run", "experiment.toml", "--results", str(results)]), cwd=tmp_path,
                            env={**base_env(), **ENV},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            with h5py.File(results, "r", swmr=True, locking=False) as file:
                if len(file["trials"]) >= 14:
                    break
        except (OSError, KeyError):
            pass
    os.killpg(proc.pid, signal.SIGKILL)  # mpirun, and every rank (they may sit in process groups of their own)
    subprocess.run(["pkill", "-9", "-f", str(results)], check=False)
    proc.wait(30)
    first = segments(results)
    assert 14 <= sum(r["status"] == "done" for r in first.values()) < 40
    running = [r for r in first.values() if r["status"] == "running" and r["parent"] >= 0]
    assert running, "the kill left no segment running from a checkpoint"
    lost = running[0]["parent"]
    shutil.rmtree(checkpoint_dir(tmp_path / "results-trials", lost))

    out = hpo(["run", "experiment.toml", "--resume", "--results", str(results)], tmp_path, ranks=5, timeout=180,
              env=ENV)
    assert out.returncode == 0, out.output
    rows = segments(results)
    assert all(rows[t]["status"] == first[t]["status"] for t in first if first[t]["status"] != "running")
    rerun = rows[running[0]["trial_id"]]
    assert rerun["status"] == "failed" and rerun["attempt"] == 2
    failed = [r for r in rows.values() if r["status"] == "failed"]
    assert all(r["parent"] == lost for r in failed), [(r["trial_id"], r["parent"], r["error"]) for r in failed]
    assert all("CheckpointError" in r["error"] and "missing or empty" in r["error"] for r in failed)
    for r in failed:  # the member's next segment restores a good checkpoint, never the lost one
        after = min((o for o in rows.values() if o["member"] == r["member"] and o["trial_id"] > r["trial_id"]),
                    key=lambda o: o["trial_id"])
        assert after["parent"] != lost and (after["parent"] < 0 or rows[after["parent"]]["status"] == "done")
    second_job = [r for t, r in rows.items() if t not in first or first[t]["status"] == "running"]
    assert not any(r["parent"] == lost and r["status"] == "done" for r in second_job)
    check_lineage({t: r for t, r in rows.items() if r["status"] == "done"}, 20, 4)


def test_an_objective_that_never_saves_its_checkpoint_fails_its_segments_with_a_line_naming_it(tmp_path):
    write_experiment(tmp_path, pbt_experiment(population=2, epochs=4), objective="""\
        def objective(params, trial):
            return 1.0
        """)
    text = (tmp_path / "experiment.toml").read_text().replace("light_objectives:pbt_toy", "objective.py:objective")
    (tmp_path / "experiment.toml").write_text(text)
    out = hpo(["run", "experiment.toml"], tmp_path, env=ENV)
    assert out.returncode == 0, out.output  # each member is given up after 3 failed segments
    rows = segments(tmp_path / "results.h5")
    assert len(rows) == 6 and all(r["status"] == "failed" for r in rows.values())
    assert all("CheckpointNotSaved" in r["error"] and "trial.checkpoint_dir" in r["error"] for r in rows.values())


@pytest.mark.parametrize("extra, message, ranks", [
    ("population = 1", "phase[1].population: must be an integer >= 2", 3),  # every rank says it, under mpirun
    # The same check in one process for the rest (the line is made before any rank starts).
    ("quantile = 0.75", "phase[1].quantile: must be a number in (0, 0.5] (the fraction that copies the best) "
                        "(got 0.75)", None),
    ("quantile = 0", "phase[1].quantile: must be a number in (0, 0.5]", None),
    ("interval = 30", "phase[1].interval: must be <= epochs (got interval = 30, epochs = 12)", None),
    ('mode = "lockstep"', "phase[1].mode: must be one of async, sync (got 'lockstep')", None),
    ("perturb = [0.8, -1]", "phase[1].perturb: must be a list of numbers > 0", None),
])
def test_bad_pbt_options_exit_2_on_every_rank_with_one_line(tmp_path, extra, message, ranks):
    body = pbt_experiment().replace("population = 4\n", "").replace("interval = 2\n", "")
    lines = [line for line in extra.splitlines()]
    body = body.replace('strategy = "pbt"', 'strategy = "pbt"\n        ' + "\n        ".join(
        lines + (["interval = 2"] if "interval" not in extra else [])))
    write_experiment(tmp_path, body)
    out = hpo(["run", "experiment.toml"], tmp_path, ranks=ranks, env=ENV, timeout=60)
    assert out.returncode == 2, out.output
    errors = [line for line in out.output.splitlines() if line.startswith("hpc_hpo: error:")]
    assert errors and all(message in line for line in errors), out.output
    assert not (tmp_path / "results.h5").exists()


def test_the_stored_population_and_the_report(tmp_path):
    """population left out: one member per worker; the report has its pbt page and says what checkpoints took."""
    write_experiment(tmp_path, pbt_experiment().replace("population = 4\n", ""))
    out = hpo(["run", "experiment.toml"], tmp_path, ranks=4, env=ENV)
    assert out.returncode == 0, out.output
    results = read_results(tmp_path / "results.h5")
    assert "population = 3" in results.attrs["config"]
    assert sorted({r["member"] for r in results.records()}) == [0, 1, 2]
    report = hpo(["report", "results.h5", "--out", "report"], tmp_path)
    assert report.returncode == 0, report.output
    assert (tmp_path / "report" / "pbt.png").stat().st_size > 10_000
    html = (tmp_path / "report" / "report.html").read_text()
    assert "pbt.png" in html and "checkpoints" in html
    summary = json.loads(hpo(["status", "results.h5", "--json"], tmp_path).stdout)
    assert summary["pbt"]["members"] == 3 and summary["pbt"]["checkpoints_mb"] > 0


def test_pb2_chooses_the_explored_values_on_the_worker(tmp_path):
    write_experiment(tmp_path, pbt_experiment(epochs=16, extra='explore = "pb2"'))
    out = hpo(["run", "experiment.toml"], tmp_path, ranks=5, env=ENV)
    assert out.returncode == 0, out.output
    rows = segments(tmp_path / "results.h5")
    check_lineage(rows, 16, 4)
    exploits = [r for r in rows.values() if r["parent"] >= 0 and rows[r["parent"]]["member"] != r["member"]]
    assert exploits
    for r in exploits:  # chosen by the worker (its time recorded), inside the bounds
        assert r["suggest_seconds"] >= 0 and 0.001 <= r["param_lr"] <= 1.0
    others = [r for r in rows.values() if r not in exploits]
    assert all(math.isnan(r["suggest_seconds"]) for r in others)


def test_optimize_runs_a_pbt_phase_from_python(tmp_path, monkeypatch):
    import hpc_hpo

    from light_objectives import pbt_toy

    monkeypatch.chdir(tmp_path)
    best = hpc_hpo.optimize(pbt_toy, space={"lr": {"type": "float", "low": 0.01, "high": 0.5, "log": True}},
                            phases=[{"strategy": "pbt", "population": 3, "interval": 2, "epochs": 6}],
                            results=str(tmp_path / "api.h5"), seed=1, quiet=True)
    rows = segments(tmp_path / "api.h5")
    assert best.value == min(r["value"] for r in rows.values() if r["status"] == "done")
    assert rows[best.trial_id]["param_lr"] == best.params["lr"]
    check_lineage(rows, 6, 3)


def test_async_members_never_wait_for_a_slow_one(tmp_path):
    """Member 0 trains 15 times slower; in async mode the others go on, and it goes on from its own checkpoints."""
    lr = '{ type = "float", low = 0.001, high = 1.0, log = true }\n        slow_member = { type = "fixed", value = 0 }' \
         '\n        slow_delay = { type = "fixed", value = 0.15 }'
    write_experiment(tmp_path, pbt_experiment(epochs=12, delay=0.01, lr=lr))
    out = hpo(["run", "experiment.toml"], tmp_path, ranks=5, env=ENV)
    assert out.returncode == 0, out.output
    rows = segments(tmp_path / "results.h5")
    check_lineage(rows, 12, 4)
    slow = sorted((r for r in rows.values() if r["member"] == 0), key=lambda r: r["t_end"])
    others = [r for r in rows.values() if r["member"] != 0]
    # While member 0 trained its first segment (0.3 s), the others trained several each.
    assert sum(r["t_end"] <= slow[0]["t_end"] for r in others) >= 6
    assert max(r["t_end"] for r in others) < slow[-1]["t_end"]


def test_a_member_whose_only_checkpoint_is_lost_starts_afresh_and_the_log_says_so(tmp_path):
    """One process, so segments run in a known order: member 0's second segment deletes member 1's only
    checkpoint; member 1's next segment fails on it and the member starts again from epoch 0, with a warning."""
    write_experiment(tmp_path, pbt_experiment(population=2, epochs=6, lr='{ type = "categorical", choices = [0.1] }'),
                     objective="""\
        import shutil
        from pathlib import Path
        from light_objectives import pbt_toy

        def objective(params, trial):
            if trial.member == 0 and trial.start_epoch == 2:
                shutil.rmtree(Path(trial.checkpoint_dir).parent / "trial_000001")
            return pbt_toy(params, trial)
        """)
    text = (tmp_path / "experiment.toml").read_text().replace("light_objectives:pbt_toy", "objective.py:objective")
    (tmp_path / "experiment.toml").write_text(text)
    out = hpo(["run", "experiment.toml"], tmp_path, env=ENV)
    assert out.returncode == 0, out.output
    assert "member 1 has no usable checkpoint left: it starts afresh from epoch 0" in out.output
    rows = segments(tmp_path / "results.h5")
    failed = [r for r in rows.values() if r["status"] == "failed"]
    assert [(r["member"], r["parent"]) for r in failed] == [(1, 1)] and "CheckpointError" in failed[0]["error"]
    again = min((r for r in rows.values() if r["member"] == 1 and r["trial_id"] > failed[0]["trial_id"]),
                key=lambda r: r["trial_id"])
    assert again["parent"] == -1 and again["start_epoch"] == 0
    check_lineage({t: r for t, r in rows.items() if r["status"] == "done"}, 6, 2)
