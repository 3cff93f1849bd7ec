"""The master's work per result in a Bayesian search does not grow with the history. A table, not a test.

    python benchmarks/master_cost.py [--results 20000] [--workers 8]

Drives the real scheduler (no MPI, no GP: the master never fits one) through a Bayesian phase
with simulated workers that finish in random order, and reports, per window of results, the
scheduler's time per result (result + the next Bayesian task + the worker's chosen point) and the
size of what each task carries (observations the worker had not seen, pending points).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from hpc_hpo.config import parse_config
from hpc_hpo.run.protocol import Result
from hpc_hpo.run.scheduler import Dispatch, Scheduler, TrialFinished, TrialStarted, WorkerReady


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    config = parse_config({
        "experiment": {"objective": "m:f", "seed": 1, "max_initial_failures": 0},
        "space": {f"x{i}": {"type": "float", "low": 0.0, "high": 1.0} for i in range(6)},
        "phase": [{"strategy": "bayes", "trials": args.results}],
    })
    scheduler = Scheduler.from_config(config)
    rng = np.random.default_rng(0)
    running: dict[int, Dispatch] = {}
    choosing: list[int] = []

    def apply(instructions):
        for ins in instructions:
            if isinstance(ins, Dispatch):
                running[ins.trial.rank] = ins
                choosing.append(ins.trial.rank)

    def choose_all():
        while choosing:  # each worker reports its point; that may let a waiting worker choose
            rank = choosing.pop(0)
            trial = running[rank].trial
            params = {f"x{i}": float(v) for i, v in enumerate(rng.random(6))}
            apply(scheduler.handle(TrialStarted(rank, trial.trial_id, params, 0.05), 0.0))
            running[rank] = Dispatch(trial._replace(params=params), running[rank].suggest)

    for rank in range(1, args.workers + 1):
        apply(scheduler.handle(WorkerReady(rank, "host"), 0.0))
    choose_all()

    window = args.results // 10
    print(f"master's scheduler work per result, Bayesian phase, {args.workers} simulated workers")
    print(f"{'results so far':>15} {'us per result':>14} {'observations per task':>22} {'pending per task':>17}")
    timings, observations, pendings = [], [], []
    for done in range(1, args.results + 1):
        rank = int(rng.choice(sorted(running)))
        trial = running.pop(rank).trial
        started = time.perf_counter()
        instructions = scheduler.handle(TrialFinished(rank, Result(trial.trial_id, 1.0, {}, "", 0.0, 1.0)), 0.0)
        apply(instructions)
        choose_all()
        timings.append(time.perf_counter() - started)
        for ins in instructions:
            if isinstance(ins, Dispatch) and ins.suggest is not None:
                observations.append(len(ins.suggest.observations))
                pendings.append(len(ins.suggest.pending))
        if done % window == 0:
            print(f"{done:>15,} {1e6 * statistics.median(timings):>14.1f} {statistics.mean(observations):>22.2f} "
                  f"{statistics.mean(pendings):>17.2f}")
            timings, observations, pendings = [], [], []
        if not running:
            break


if __name__ == "__main__":
    main()
