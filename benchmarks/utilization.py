"""Worker utilisation in a Bayesian search: how much of the workers' time goes to the objective.

    python benchmarks/utilization.py                     # 8 workers, 1-second trials, 200 trials, 190 Bayesian
    python benchmarks/utilization.py --not-sequential    # let workers choose points at the same time
    python benchmarks/utilization.py --executor process --lookahead   # trials in child processes, steps prepared

Utilisation = time inside the objective, summed over trials, over 8 workers x the wall time from
the first dispatch to the last result. The rest is the Bayesian step on the worker, waiting for
another worker to finish choosing (sequential mode), messaging, and the end of the budget (workers
whose last trial ended early wait for the others: about half a trial each, 2% of a run of 25 one-second
trials per worker). The second figure leaves that end out: each worker's time in trials over its own
span, from its first trial's start to its last trial's end, averaged over the workers. Read from the
results file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bayes_quality import write_experiment  # noqa: E402

from hpc_hpo.results.reader import read_results  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--initial", type=int, default=10)
    parser.add_argument("--sleep", type=float, default=1.0)
    parser.add_argument("--problem", default="hartmann6")
    parser.add_argument("--not-sequential", action="store_true")
    parser.add_argument("--lookahead", action="store_true", help="prepare each step while the trial before it runs")
    parser.add_argument("--executor", choices=["inline", "process"], default="inline",
                        help="where trials run (process: a child per worker, as for TensorFlow; the look-ahead then "
                             "prepares each step shortly before the trial ends, with the latest results)")
    parser.add_argument("--keep", type=Path, help="write the experiment and results file here (default: a temporary folder)")
    args = parser.parse_args()

    sequential = "false" if args.not_sequential else "true"
    phases = (f'[[phase]]\nstrategy = "sobol"\ntrials = {args.initial}\n\n[[phase]]\nstrategy = "bayes"\n'
              f"trials = {args.trials - args.initial}\nsequential = {sequential}\n"
              f"lookahead = {'true' if args.lookahead else 'false'}\n\n[workers]\nexecutor = \"{args.executor}\"\n")
    with tempfile.TemporaryDirectory() as tmp:
        cwd = args.keep or Path(tmp)
        cwd.mkdir(parents=True, exist_ok=True)
        config = write_experiment(cwd, args.problem, phases, seed=0, sleep=args.sleep)
        launcher = Path(sys.executable).parent / "mpirun"
        cmd = [str(launcher) if launcher.exists() else shutil.which("mpirun"), "-n", str(args.workers + 1),
               "--oversubscribe", "--bind-to", "none", sys.executable, "-m", "hpc_hpo", "run", str(config), "-q", "--overwrite"]
        env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        subprocess.run(cmd, cwd=cwd, env=env, check=True, timeout=3600)
        results = read_results(cwd / f"{args.problem}-0.h5")

    rows = results.records()
    start = min(r["t_submit"] for r in rows)
    end = max(r["t_end"] for r in rows)
    in_objective = sum(r["t_end"] - r["t_start"] for r in rows)
    utilisation = in_objective / (args.workers * (end - start))
    gaps, to_master, steps, to_worker = [], [], [], []
    by_rank: dict[int, list[dict]] = {}
    for r in rows:
        by_rank.setdefault(r["rank"], []).append(r)
    for trials in by_rank.values():
        trials.sort(key=lambda r: r["t_start"])
        for a, b in zip(trials, trials[1:], strict=False):
            if b["strategy"] != "bayes":
                continue
            gaps.append(b["t_start"] - a["t_end"])
            to_master.append(b["t_submit"] - a["t_end"])  # the result's message, the master, a wait for another's step
            steps.append(b["suggest_seconds"])
            to_worker.append(b["t_start"] - b["t_submit"] - b["suggest_seconds"])  # the task's message, starting it
    run = results.runs[-1]
    print(f"{args.workers} workers, {args.problem}, objective sleeps {args.sleep} s, {len(rows)} trials "
          f"({sum(r['strategy'] == 'bayes' for r in rows)} Bayesian), sequential = {sequential}, "
          f"lookahead = {str(args.lookahead).lower()}, executor = {args.executor}")
    spans = [(sum(r["t_end"] - r["t_start"] for r in trials), max(r["t_end"] for r in trials)
              - min(r["t_start"] for r in trials)) for trials in by_rank.values()]
    per_worker = statistics.mean(busy / span for busy, span in spans)
    print(f"  utilisation (time in the objective)     {100 * utilisation:6.2f} %")
    print(f"  each worker, first start to last end    {100 * per_worker:6.2f} % (the end of the budget left out)")
    print(f"  wall time                               {end - start:8.1f} s (ideal {len(rows) * args.sleep / args.workers:.1f} s)")
    for label, values in (("gap before a Bayesian trial", gaps), ("  result to master, wait for a turn", to_master),
                          ("  Bayesian step on the worker", steps), ("  task to worker, trial start", to_worker)):
        print(f"  {label:<38} median {statistics.median(values) * 1e3:6.1f} ms, mean {statistics.mean(values) * 1e3:6.1f}"
              f" ms, 95th percentile {np.percentile(values, 95) * 1e3:6.1f} ms")
    print(f"  master CPU                              {run['master_cpu_seconds']:.2f} s for {len(rows)} results "
          f"({1e3 * run['master_cpu_seconds'] / len(rows):.2f} ms per result)")


if __name__ == "__main__":
    main()
