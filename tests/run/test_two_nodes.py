"""Two nodes on one machine: ranks in two UTS namespaces ("node-a" and "node-b") under one real mpirun, each node with
4 faked GPUs. The master must split the ranks by node and bind each worker to its node's GPU by its local rank, as
on a cluster where the job script pinned 5 ranks on the first node and 4 on the second."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from hpc_hpo.results.reader import read_results

from conftest import find_mpirun, launcher_flags, run_command, write_experiment

OBJECTIVE = """
import os, socket, time

def objective(params):
    time.sleep(0.2)  # long enough for every worker to get trials
    with open(f"seen-{os.getpid()}-{params['x']:.6f}.txt", "w") as out:  # what the trial itself sees
        out.write(f"{socket.gethostname()} {os.environ.get('CUDA_VISIBLE_DEVICES')}")
    return params["x"]
"""

EXPERIMENT = """
[experiment]
objective = "objective.py:objective"
results = "results.h5"
seed = 3
[space]
x = { type = "float", low = 0.0, high = 1.0 }
[[phase]]
strategy = "random"
trials = 24
"""


def on_node(name: str, ranks: int) -> list[str]:
    """An mpirun application context: ``ranks`` ranks that see the host name ``name`` and 4 GPUs."""
    script = f"hostname {name} && export CUDA_VISIBLE_DEVICES=0,1,2,3 && exec {sys.executable} -m hpc_hpo run experiment.toml"
    return ["-n", str(ranks), "unshare", "--uts", "sh", "-c", script]


def test_each_worker_is_bound_to_its_own_nodes_gpu_by_its_local_rank(tmp_path):
    if shutil.which("unshare") is None or subprocess.run(["unshare", "--uts", "true"]).returncode != 0:
        pytest.fail("this test needs unshare --uts (util-linux) as root, to give ranks their own host names")
    write_experiment(tmp_path, EXPERIMENT, OBJECTIVE)
    cmd = [find_mpirun(), *launcher_flags(), *on_node("node-a", 5), ":", *on_node("node-b", 4)]
    out = run_command(cmd, tmp_path, timeout=180)
    assert out.returncode == 0, out.output

    # The device map, one line per node: the master and 4 workers on node-a, 4 workers on node-b.
    assert "node-a (4 GPUs from CUDA_VISIBLE_DEVICES): r0 master, r1 GPU 0, r2 GPU 1, r3 GPU 2, r4 GPU 3" in out.output
    assert "node-b (4 GPUs from CUDA_VISIBLE_DEVICES): r5 GPU 0, r6 GPU 1, r7 GPU 2, r8 GPU 3" in out.output
    rows = read_results(tmp_path / "results.h5").records()
    assert len(rows) == 24
    bound = {(r["rank"], r["host"], r["gpus"]) for r in rows}
    expected = {(rank, "node-a", str(rank - 1)) for rank in range(1, 5)} | {(rank, "node-b", str(rank - 5))
                                                                           for rank in range(5, 9)}
    assert bound <= expected and {r for r, _, _ in bound} == set(range(1, 9)), bound  # all 8 took trials
    # ... and each trial ran where its row says, seeing only its worker's GPU.
    seen = {tuple(p.read_text().split()) for p in tmp_path.glob("seen-*.txt")}
    assert seen == {(host, gpus) for _, host, gpus in bound}
