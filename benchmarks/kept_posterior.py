"""Past 1,000 points: the look-ahead's fold-in into the kept posterior against the usual fold-in.

    python benchmarks/kept_posterior.py                                   # michalewicz5 and ackley5, seeds 0 1
    python benchmarks/kept_posterior.py --problems hartmann6 --seeds 0 1 2 --workers 128 --budget 1500

The simulated workers of ``simulated_workers.py`` (``hpc_hpo-refresh``: each prepares its next step shortly
before its trial ends, then folds in what came since), run twice per problem and seed: as shipped, where
from ``KEEP_POSTERIOR_FROM`` (1,000) points the fold-in keeps the prepared posterior, and with that threshold out
of reach, where every fold-in refits, scores and refines. Both see the same trial durations. Prints the regret at
1,000 evaluations and at the end (the kept posterior only acts after 1,000) and the seconds spent choosing on the
workers' critical path, summed over the run. A table, not a test; each run takes a few minutes on one core.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from functions import PROBLEMS  # noqa: E402
from simulated_workers import METHODS, simulate  # noqa: E402

import hpc_hpo.search.gp.suggester as suggester  # noqa: E402


def run(problem: str, seed: int, workers: int, budget: int, keep: bool) -> tuple[float, float, float]:
    """(regret at 1,000 evaluations, regret at the end, seconds choosing on the critical path)."""
    shipped = suggester.KEEP_POSTERIOR_FROM
    suggester.KEEP_POSTERIOR_FROM = shipped if keep else 10**12
    try:
        method = METHODS["hpc_hpo-refresh"](problem, seed, workers)
        with threadpool_limits(1):
            trials = simulate(method, budget)
    finally:
        suggester.KEEP_POSTERIOR_FROM = shipped
    best = np.minimum.accumulate([t.value for t in trials]) - PROBLEMS[problem]["minimum"]
    return float(best[min(999, len(best) - 1)]), float(best[-1]), method.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", nargs="+", default=["michalewicz5", "ackley5"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--budget", type=int, default=1200)
    args = parser.parse_args()
    print(f"{args.workers} simulated workers, {args.budget} evaluations; regret at 1,000 / at the end; "
          "seconds choosing on the critical path")
    print(f"{'problem':>14} {'seed':>5} {'kept posterior':>32} {'usual fold-in':>32}")
    for problem in args.problems:
        for seed in args.seeds:
            kept = run(problem, seed, args.workers, args.budget, keep=True)
            usual = run(problem, seed, args.workers, args.budget, keep=False)
            print(f"{problem:>14} {seed:>5} " + " ".join(f"{a:>10.4g} {b:>10.4g} {c:>9.1f}s" for a, b, c in (kept, usual)),
                  flush=True)


if __name__ == "__main__":
    main()
