"""The simulated cluster of ``benchmarks/scale.py`` against real MPI: the same run gives the same rows."""

from __future__ import annotations

import math

import pytest

from hpc_hpo.config import load_config
from hpc_hpo.results.reader import read_results
from hpc_hpo.results.writer import ResultsWriter
from hpc_hpo.run.master import MasterLoop
from hpc_hpo.run.options import RunOptions
from hpc_hpo.run.protocol import Hello
from hpc_hpo.run.simulation import SimulatedCluster

from conftest import hpo, write_experiment

OBJECTIVE = """
def objective(params):
    return (params["x"] - 0.3) ** 2 + len(params["c"]) + params["n"]
"""

EXPERIMENT = """
[experiment]
objective = "objective.py:objective"
results = "RESULTS"
seed = 7
[space]
x = { type = "float", low = 0.0, high = 1.0 }
n = { type = "int", low = 1, high = 4 }
c = { type = "categorical", choices = ["a", "bb", "ccc"] }
[[phase]]
strategy = "grid"
steps = 2
[[phase]]
strategy = "random"
trials = 10
repeats = 2
"""


def objective(params):
    return (params["x"] - 0.3) ** 2 + len(params["c"]) + params["n"]


def rows_of(path):
    """What a user compares between two runs: each trial's phase, point, value, status and repeat (trial ids depend on
    which worker was free first, once repeats go out between new points), and the trial ids as a whole."""
    records = read_results(path).records()
    for r in records:  # a repeat evaluates its group's point
        group = next(g for g in records if g["trial_id"] == r["group"])
        assert (r["param_x"], r["param_n"], r["param_c"]) == (group["param_x"], group["param_n"], group["param_c"])
    return (sorted((r["phase"], r["param_x"], r["param_n"], r["param_c"], r["value"], r["status"], r["repeat"])
                   for r in records), sorted(r["trial_id"] for r in records))


@pytest.mark.parametrize("clock", ["virtual", "real"])
def test_the_simulated_cluster_and_mpirun_store_the_same_rows(tmp_path, clock):
    write_experiment(tmp_path, EXPERIMENT.replace("RESULTS", "mpi.h5"), OBJECTIVE)
    out = hpo(["run", "experiment.toml"], tmp_path, ranks=4, timeout=180)
    assert out.returncode == 0, out.output

    config = load_config(write_experiment(tmp_path, EXPERIMENT.replace("RESULTS", "simulated.h5"), OBJECTIVE,
                                          name="simulated.toml"))
    cluster = SimulatedCluster(3, config.space, objective, lambda rng: rng.uniform(0.001, 0.01), clock=clock)
    writer = ResultsWriter.create(tmp_path / "simulated.h5", config.space, {"objective": config.experiment.objective,
                                                                      "budget": config.budget}, slots=3)
    writer.start_run(world_size=4, workers=3, host="simulated")
    loop = MasterLoop(cluster, config, writer, [Hello(rank, "simulated", 0) for rank in (1, 2, 3)], RunOptions())
    assert loop.run() == 0

    (mpi, mpi_ids), (simulated, simulated_ids) = rows_of(tmp_path / "mpi.h5"), rows_of(tmp_path / "simulated.h5")
    assert len(mpi) == 2 * 2 * 3 + 10 * 2 and simulated == mpi and simulated_ids == mpi_ids == list(range(len(mpi)))
    assert all(status == "done" and math.isfinite(value) for *_, value, status, _ in simulated)
    stats = cluster.stats
    assert stats.trials == len(mpi) and stats.tasks == len(mpi) and 0 < stats.utilisation <= 1
    assert {r["rank"] for r in read_results(tmp_path / "simulated.h5").records()} == {1, 2, 3}
