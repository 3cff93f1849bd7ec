"""Workers under a real mpirun: GPU binding (with faked GPUs) and supervised trial processes."""

from __future__ import annotations

from collections import defaultdict

from hpc_hpo.results.reader import read_results

from conftest import hpo, write_experiment

SEES = """
import os

def objective(params, trial):
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "unset").split(",")
    first = float(visible[0]) if visible[0].isdigit() else -1.0
    return {"value": params["x"], "first_gpu": first, "n_gpus": len(visible),
            "fraction": float(os.environ.get("HPC_HPO_GPU_MEMORY_FRACTION", "1")),
            "threads": float(os.environ["OMP_NUM_THREADS"]), "trial_gpus": len(trial.gpus)}
"""


def binding_run(tmp_path, workers_table: str, visible: str, ranks: int = 5):
    write_experiment(tmp_path, f"""
        [experiment]
        objective = "objective.py:objective"
        results = "results.h5"
        seed = 3
        [space]
        x = {{ type = "float", low = 0.0, high = 1.0 }}
        [[phase]]
        strategy = "random"
        trials = 16
        [workers]
        executor = "inline"
        {workers_table}
    """, objective=SEES)
    out = hpo(["run", "experiment.toml"], tmp_path, ranks=ranks, timeout=120, env={"CUDA_VISIBLE_DEVICES": visible})
    assert out.returncode == 0, out.output
    return out, read_results(tmp_path / "results.h5").records()


def gpus_by_rank(rows) -> dict[int, set[str]]:
    seen = defaultdict(set)
    for row in rows:
        seen[row["rank"]].add(row["gpus"])
    return dict(seen)


def test_each_worker_gets_one_of_the_inherited_gpus(tmp_path):
    out, rows = binding_run(tmp_path, "", "4,5,6,7")
    assert len(rows) == 16 and all(r["status"] == "done" for r in rows)
    by_rank = gpus_by_rank(rows)
    assert all(len(gpus) == 1 for gpus in by_rank.values())
    assert {r: g.pop() for r, g in by_rank.items()} == {r: str(r + 3) for r in by_rank}  # rank 1 -> GPU 4, ...
    for row in rows:  # what the trial saw is what the row says
        assert str(int(row["metric_first_gpu"])) == row["gpus"] and row["metric_n_gpus"] == 1
    assert "devices: " in out.stderr and "r0 master, r1 GPU 4, r2 GPU 5, r3 GPU 6, r4 GPU 7" in out.stderr


def test_two_gpus_per_trial_only_group_leaders_train(tmp_path):
    out, rows = binding_run(tmp_path, "gpus_per_trial = 2", "4,5,6,7")
    assert len(rows) == 16
    assert gpus_by_rank(rows) == {1: {"4,5"}, 3: {"6,7"}}
    assert all(r["metric_n_gpus"] == 2 and r["metric_trial_gpus"] == 2 for r in rows)
    assert "r2 in r1's group" in out.stderr


def test_two_workers_per_gpu_share_it_with_half_the_memory_each(tmp_path):
    out, rows = binding_run(tmp_path, "workers_per_gpu = 2", "0,1")
    by_rank = gpus_by_rank(rows)
    assert {r: g.pop() for r, g in by_rank.items()} == {r: str((r - 1) % 2) for r in by_rank}
    assert all(r["metric_fraction"] == 0.5 for r in rows)
    assert "r1 GPU 0 (1/2), r2 GPU 1 (1/2), r3 GPU 0 (1/2), r4 GPU 1 (1/2)" in out.stderr


def test_without_gpus_workers_run_on_cpu_with_their_share_of_threads(tmp_path):
    out, rows = binding_run(tmp_path, "threads = 3", "", ranks=3)
    assert {r["gpus"] for r in rows} == {"cpu"} and {r["metric_threads"] for r in rows} == {3.0}
    assert {r["metric_first_gpu"] for r in rows} == {-1.0}
    assert "no GPU found" in out.stderr



def test_gpus_named_by_uuid_are_stored_whole(tmp_path):
    """SLURM may bind GPUs by UUID (and MIG slices by longer names): each worker's row names its whole id."""
    uuids = ["GPU-8f6c2a1e-3d5b-4c7a-9e21-0b1c2d3e4f50", "MIG-GPU-7d8e9f0a-1b2c-4d3e-9f8a-7b6c5d4e3f2a/1/0",
             "GPU-1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d", "GPU-0e1f2a3b-4c5d-4a7b-8c9d-1a2b3c4d5e6f"]
    out, rows = binding_run(tmp_path, "gpus_per_trial = 2", ",".join(uuids))
    assert gpus_by_rank(rows) == {1: {",".join(uuids[:2])}, 3: {",".join(uuids[2:])}}
    assert all(r["metric_n_gpus"] == 2 for r in rows)


FAULTS = """
import ctypes, os, sys, time

def objective(params, trial):
    mode = params["mode"]
    print("trial", trial.trial_id, "runs", mode, file=sys.stderr)
    if mode == "sleep":
        time.sleep(120)
    elif mode == "segfault":
        ctypes.string_at(0)
    elif mode == "raise":
        raise RuntimeError("objective gave up")
    elif mode == "exit":
        os._exit(7)
    return {"value": 1.0, "pid": os.getpid()}
"""


def test_timeouts_and_crashes_are_rows_and_the_run_goes_on(tmp_path):
    write_experiment(tmp_path, """
        [experiment]
        objective = "objective.py:objective"
        results = "results.h5"
        max_initial_failures = 0
        [space]
        mode = { type = "categorical", choices = ["ok", "sleep", "segfault", "raise", "exit"] }
        [[phase]]
        strategy = "explicit"
        points = [ { mode = "sleep" }, { mode = "segfault" }, { mode = "raise" }, { mode = "exit" },
                   { mode = "ok" }, { mode = "ok" }, { mode = "ok" }, { mode = "ok" } ]
        [workers]
        executor = "process"
        trial_timeout = 3
    """, objective=FAULTS)
    out = hpo(["run", "experiment.toml"], tmp_path, ranks=3, timeout=120)
    assert out.returncode == 0, out.output
    rows = {r["param_mode"] + str(r["trial_id"]): r for r in read_results(tmp_path / "results.h5").records()}
    assert len(rows) == 8
    assert rows["sleep0"]["status"] == "timeout" and "workers.trial_timeout = 3 s" in rows["sleep0"]["error"]
    assert rows["segfault1"]["status"] == "failed" and "signal 11 (SIGSEGV)" in rows["segfault1"]["error"]
    assert rows["raise2"]["error"].startswith("RuntimeError: objective gave up")
    assert rows["exit3"]["status"] == "failed" and "exited with code 7" in rows["exit3"]["error"]
    assert rows["exit3"]["error"].endswith("last lines of stderr:\ntrial 3 runs exit")
    ok = [r for k, r in rows.items() if k.startswith("ok")]
    assert all(r["status"] == "done" and r["memory_mb"] > 0 for r in ok)
    assert "trial 0 timeout on rank" in out.stderr
    assert (tmp_path / "results-trials" / "trial_000002" / "stderr.txt").read_text() == "trial 2 runs raise\n"
