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
from hpc_hpo.search.gp.suggester import KEEP_POSTERIOR_FROM

from conftest import hpo, write_experiment

OBJECTIVE = """
def objective(params):
    return (params["x"] - 0.3) ** 2 + len(params["c"]) + params["n"]
"""

SEARCH = """
[experiment]
objective = "objective.py:objective"
results = "RESULTS"
seed = 7
[space]
x = { type = "float", low = 0.0, high = 1.0 }
n = { type = "int", low = 1, high = 4 }
c = { type = "categorical", choices = ["a", "bb", "ccc"] }
"""

EXPERIMENT = SEARCH + """
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


LOOKAHEAD = SEARCH + """
[[phase]]
strategy = "sobol"
trials = 4
[[phase]]
strategy = "bayes"
trials = 60
lookahead = LOOKAHEAD
"""


def simulated_bayes_run(tmp_path, lookahead: bool, known: int = 4, duration=lambda rng: 1.0):
    """4 workers, ``known`` Sobol trials then 60 Bayesian ones, 1-s trials (or as ``duration`` says), a 0.1-s
    Bayesian step; with the look-ahead, a fold-in of 0.01 s."""
    name = f"lookahead-{str(lookahead).lower()}-{known}"
    text = LOOKAHEAD.replace("RESULTS", f"{name}.h5").replace("LOOKAHEAD", str(lookahead).lower())
    config = load_config(write_experiment(tmp_path, text.replace("trials = 4\n", f"trials = {known}\n"), OBJECTIVE,
                                          name=f"{name}.toml"))
    steps, folds = [], []
    cluster = SimulatedCluster(4, config.space, objective, duration, step=lambda n, p: steps.append(n) or 0.1,
                               fold=(lambda n, p, k: folds.append(k) or 0.01) if lookahead else None)
    writer = ResultsWriter.create(tmp_path / f"{name}.h5", config.space, {"objective": config.experiment.objective,
                                                                        "budget": config.budget}, slots=4)
    writer.start_run(world_size=5, workers=4, host="simulated")
    loop = MasterLoop(cluster, config, writer, [Hello(rank, "simulated", 0) for rank in (1, 2, 3, 4)], RunOptions())
    assert loop.run() == 0
    records = read_results(tmp_path / f"{name}.h5").records()
    assert len(records) == known + 60 and all(r["status"] == "done" for r in records)
    return cluster.stats, steps, folds


def test_simulated_workers_look_ahead_as_the_real_ones_and_fold_in_what_came_since(tmp_path):
    """With ``lookahead``, a simulated worker asks the real master for the latest results shortly before its trial
    ends (its last trial's length less its last step and a margin), prepares its step from the master's Update beside
    the trial, and after the trial only folds in what came since: the step leaves the critical path."""
    plain, plain_steps, _ = simulated_bayes_run(tmp_path, lookahead=False)
    ahead, ahead_steps, folds = simulated_bayes_run(tmp_path, lookahead=True)
    assert plain.prepared == 0 and plain.bayes_tasks == ahead.bayes_tasks == 60
    assert plain.steps == pytest.approx(60 * 0.1)
    # Each worker's first Bayesian task is a whole step (nothing prepared yet); from its second on, the step prepared
    # from the Update (asked 0.1 + 0.03 s before the trial ends) is ready when the trial ends: no wait, only the fold.
    assert ahead.prepared >= 60 - 2 * 4 and len(folds) == ahead.prepared
    assert all(k <= 4 for k in folds)  # only what came since the Update: the master counted the rest as seen
    assert ahead.steps == pytest.approx((60 - len(folds)) * 0.1 + len(folds) * 0.01)
    assert ahead.utilisation > plain.utilisation + 0.05


@pytest.mark.parametrize("known", [100, KEEP_POSTERIOR_FROM + 3])  # (3 trials of the others may still run)
def test_past_a_thousand_points_a_simulated_trial_too_short_for_its_refresh_still_folds_in(tmp_path, known):
    """As the real worker: a trial shorter than its worker's last ends before the moment to ask for an Update, and
    its next step is whole; past KEEP_POSTERIOR_FROM points the step is also prepared when the trial starts, so
    every Bayesian task after a worker's first only folds in."""
    stats, steps, folds = simulated_bayes_run(tmp_path, True, known, lambda rng: float(rng.choice([1.0, 0.2])))
    assert stats.bayes_tasks == 60
    whole = 60 - len(folds)  # each worker's first Bayesian task, and below the threshold the short trials' next
    if known >= KEEP_POSTERIOR_FROM:
        assert min(steps) >= KEEP_POSTERIOR_FROM and whole == 4  # every step saw the thousand points
    else:
        assert whole > 4 + 5  # one trial in four is short after a long one
    assert stats.steps == pytest.approx(whole * 0.1 + len(folds) * 0.01)


@pytest.mark.parametrize("width", [0.001, 0.3, 50.0])
def test_the_simulations_event_queue_gives_its_events_in_the_order_a_heap_would(width):
    """The calendar queue that replaced the heap (buckets sorted when the clock reaches them) must not change a
    simulated run: events fall due in time order, ties in the order they were sent, also when one is sent into the
    bucket being taken, at the clock's own time (a worker's Bye), or far ahead."""
    import heapq
    import random

    from hpc_hpo.run.simulation import EventQueue

    rnd = random.Random(width)
    queue, heap, now, seq = EventQueue(width), [], 0.0, 0
    for _ in range(20_000):
        if heap and rnd.random() < 0.5:
            expected = heapq.heappop(heap)
            assert queue.pop() == expected
            now = expected[0]
        else:
            due = now + rnd.choice([0.0, rnd.random() * 3, round(rnd.random(), 1), 100 * rnd.random()])
            heapq.heappush(heap, (due, seq, seq % 7, f"message {seq}"))
            queue.push(due, seq % 7, f"message {seq}")
            seq += 1
            assert queue.next_due() == heap[0][0]
        assert len(queue) == len(heap)
    assert [queue.pop() for _ in range(len(queue))] == [heapq.heappop(heap) for _ in range(len(heap))]
