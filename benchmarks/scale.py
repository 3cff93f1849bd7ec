"""The master at thousands of workers: its cost per result and the utilisation it allows. A table, not a test.

    python benchmarks/scale.py                          # N = 8 .. 16,384, random and Bayesian phases
    python benchmarks/scale.py --workers 8 64 --rounds 3
    python benchmarks/scale.py --real 64 --trial 2      # the simulation on the wall clock beside a real mpirun
    python benchmarks/scale.py --lookahead              # + the bayes runs with lookahead = true

The real master loop (scheduler, HDF5 writer with its flushes, progress) runs against N
workers simulated in this process (:mod:`hpc_hpo.run.simulation`): every message is pickled
both ways as over MPI, every result is written to a real results file. Trial durations are
drawn from a log-normal around the trial length (sigma 0.3). Bayesian tasks carry what they
carry in a job (the observations the worker has not seen and the pending points); the simulated
worker takes as long to choose as our GP step takes with that history and that many pending
points (measured here first, on one core: the "step model"), then answers with a random point.
With ``--lookahead`` the simulated workers also look ahead as under MPI with trials in child
processes: shortly before a trial ends they ask the master for the latest results, prepare the
step beside the trial, and after it fold in what came since, as long as our GP takes for that
(the "fold model", measured the same way).

Per N and phase:
  * master CPU per result in the steady state (from the N-th result to the N-th from the end, where
    every result is answered by one new task: the first tasks and the stops are costs per worker),
    and the results per second it could absorb (1 / that), from runs where the master is busy all
    the time (the virtual clock only moves when it works): the median over the runs of that size
    (one per trial length), as one run on a shared machine varies by a third;
  * the bytes a task carries, and for Bayesian tasks the pending points and observations;
  * worker utilisation for 1 s, 10 s and 60 s trials: time in trials over time in trials plus
    each worker's gap before a trial (the master's queue, the message, another worker's
    choice, the Bayesian step), on the virtual clock that the master's real CPU time drives.
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from scipy.interpolate import RegularGridInterpolator
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))

from functions import PROBLEMS  # noqa: E402

from hpc_hpo.config import parse_config  # noqa: E402
from hpc_hpo.results.reader import read_results  # noqa: E402
from hpc_hpo.results.writer import ResultsWriter  # noqa: E402
from hpc_hpo.run.master import MasterLoop  # noqa: E402
from hpc_hpo.run.options import RunOptions  # noqa: E402
from hpc_hpo.run.protocol import Hello  # noqa: E402
from hpc_hpo.run.simulation import SimulatedCluster  # noqa: E402
from hpc_hpo.search.gp.suggester import KEEP_POSTERIOR_FROM, BayesSuggester  # noqa: E402
from hpc_hpo.search.space import parse_space  # noqa: E402

H6 = PROBLEMS["hartmann6"]
#: Trial durations: log-normal around the trial length with this sigma (mean the trial length).
SIGMA = 0.3
SPACE = {name: spec for name, spec in H6["space"].items()}


def experiment(strategy: str, trials: int, workers: int, options: dict) -> dict:
    phases = [{"strategy": "random", "trials": trials}] if strategy == "random" else [
        {"strategy": "sobol", "trials": min(workers, trials // 4)},
        {"strategy": "bayes", "trials": trials - min(workers, trials // 4), **options}]
    return {"experiment": {"objective": "functions.py:hartmann6", "seed": 1, "max_initial_failures": 0},
            "space": SPACE, "phase": phases}


def sphere(params: dict) -> float:
    """The simulated trials' value: cheap (the master's cost does not depend on it)."""
    return sum((params[f"x{i}"] - 0.5) ** 2 for i in range(6))


class StepModel:
    """Seconds our Bayesian step takes with n observations and p pending points (6-D, one core): measured
    at a few sizes, interpolated in log-log. Each measured step comes after p new results (a worker learns one
    from each of the others between two steps): with one, a step would only extend the last one's factor."""

    SIZES = (20, 100, 400, 1000, 2000, 4000)
    PENDING = (1, 8, 64, 512)

    def __init__(self, quick: bool = False):
        space = parse_space(SPACE)
        rng = np.random.default_rng(0)
        sizes = self.SIZES[:3] if quick else self.SIZES
        pending_sizes = self.PENDING[:3] if quick else self.PENDING
        self.table = np.zeros((len(sizes), len(pending_sizes)))
        with threadpool_limits(1):
            for i, n in enumerate(sizes):
                points = space.sample(rng, n)
                suggester = BayesSuggester(space, True, np.random.default_rng(1))
                suggester.update((p, H6["function"](p)) for p in points)
                for j, p in enumerate(pending_sizes):
                    pending = space.sample(rng, p)
                    suggester.suggest(pending)  # the fit, once
                    times = []
                    for _ in range(3):  # as many new results as pending points: one from each other worker
                        extra = space.sample(rng, p)
                        suggester.update((q, H6["function"](q)) for q in extra)
                        started = time.perf_counter()
                        suggester.suggest(pending)
                        times.append(time.perf_counter() - started)
                    self.table[i, j] = statistics.median(times)
        self.sizes, self.pending_sizes = np.log(sizes), np.log(pending_sizes)

    def __call__(self, n: int, p: int) -> float:
        x, y = math.log(max(n, 1)), math.log(max(p, 1))
        i = int(np.clip(np.searchsorted(self.sizes, x) - 1, 0, len(self.sizes) - 2))
        j = int(np.clip(np.searchsorted(self.pending_sizes, y) - 1, 0, len(self.pending_sizes) - 2))
        tx = (x - self.sizes[i]) / (self.sizes[i + 1] - self.sizes[i])
        ty = (y - self.pending_sizes[j]) / (self.pending_sizes[j + 1] - self.pending_sizes[j])
        logs = np.log(self.table[i:i + 2, j:j + 2])
        # bilinear in log-log, extrapolated linearly past the measured sizes
        value = ((1 - tx) * (1 - ty) * logs[0, 0] + tx * (1 - ty) * logs[1, 0] + (1 - tx) * ty * logs[0, 1]
                 + tx * ty * logs[1, 1])
        return float(np.exp(value))

    def print(self) -> None:
        print("step model: seconds per Bayesian step (rows: observations; columns: pending points)")
        print(f"{'':>8}" + "".join(f"{round(math.exp(p)):>10}" for p in self.pending_sizes))
        for n, row in zip(self.sizes, self.table, strict=True):
            print(f"{round(math.exp(n)):>8}" + "".join(f"{v:>10.4f}" for v in row))



class FoldModel:
    """Seconds a worker with a look-ahead spends on its next step after the trial: folding ``k`` new results into the
    step it prepared with n observations and p pending points (its own trial among them), measured like the step
    model at a few sizes and interpolated in log-log-log. One new result is its own trial's, the others are those of
    trials at points the step did not have as pending: with more than 257 workers a task carries the 256 points
    started last, and the trials that end are older. From KEEP_POSTERIOR_FROM finished points the fold-in keeps the
    prepared posterior, so the model measures just below that size too, and at 8,000, where a trial's worth of new
    results (2,048) can be folded in. With more new results than a prepared step can take (half its history, at
    least 8) the worker does the whole step, and the model measures that."""

    NEW = (1, 16, 256, 2048)  # 2,048: a trial's worth, when it ended before its look-ahead's moment

    def __init__(self, quick: bool = False):
        space = parse_space(SPACE)
        rng = np.random.default_rng(2)
        sizes = StepModel.SIZES[:3] if quick else tuple(sorted({*StepModel.SIZES, KEEP_POSTERIOR_FROM - 1, 8000}))
        pending_sizes = StepModel.PENDING[:3] if quick else StepModel.PENDING
        table = np.zeros((len(sizes), len(pending_sizes), len(self.NEW)))
        with threadpool_limits(1):
            for i, n in enumerate(sizes):
                for j, p in enumerate(pending_sizes):
                    for m, k in enumerate(self.NEW):
                        times = []
                        for repeat in range(2):
                            suggester = BayesSuggester(space, True, np.random.default_rng([i, j, m, repeat]))
                            suggester.update((q, H6["function"](q)) for q in space.sample(rng, n))
                            pending = space.sample(rng, p)
                            suggester.suggest(pending)  # the fit, as the steps before this one did
                            suggester.prepare(pending)
                            finished = pending[:1] + space.sample(rng, k - 1)  # its own trial, and older ones
                            suggester.update((q, H6["function"](q)) for q in finished)
                            started = time.perf_counter()
                            suggester.suggest(pending[1:])
                            times.append(time.perf_counter() - started)
                        table[i, j, m] = statistics.median(times)
        self.table = table
        self.sizes, self.pending_sizes = sizes, pending_sizes
        self._interpolate = RegularGridInterpolator(
            (np.log(sizes), np.log(pending_sizes), np.log(self.NEW)), np.log(table), bounds_error=False,
            fill_value=None)  # linear, extrapolated past the measured sizes

    def __call__(self, n: int, p: int, k: int) -> float:
        return float(np.exp(self._interpolate([[math.log(max(n, 1)), math.log(max(p, 1)), math.log(max(k, 1))]])[0]))

    def print(self) -> None:
        print("fold model: seconds per Bayesian step after a look-ahead (rows: observations; columns: pending points "
              "/ new results)")
        print(f"{'':>8}" + "".join(f"{f'{p}/{k}':>10}" for p in self.pending_sizes for k in self.NEW))
        for n, plane in zip(self.sizes, self.table, strict=True):
            print(f"{n:>8}" + "".join(f"{v:>10.4f}" for row in plane for v in row))

def simulate(workers: int, strategy: str, trials: int, trial_seconds: float, step, options: dict,
             clock: str = "virtual", folder: Path | None = None, sigma: float = SIGMA, fold=None):
    """One run of the real master against ``workers`` simulated workers; (stats, results file). ``fold``: the
    workers look ahead (with the phase's ``lookahead`` option) and fold in as long as it says."""
    loop, cluster, path = master_loop(workers, strategy, trials, trial_seconds, step, options, clock, folder, sigma,
                                      fold)
    loop.run()
    return cluster.stats, path


def master_memory(workers: int, strategy: str, trials: int, step, options: dict, folder: Path) -> float:
    """Bytes the master keeps per trial: what Python holds after a run of 2 x ``trials`` less after one of
    ``trials`` (tracemalloc; the master loop still alive), over ``trials``."""
    held = []
    for n in (trials, 2 * trials):
        gc.collect()
        tracemalloc.start()
        loop, cluster, _ = master_loop(workers, strategy, n, 1.0, step, options, "virtual", folder, SIGMA)
        loop.run()
        gc.collect()
        held.append(tracemalloc.get_traced_memory()[0])
        tracemalloc.stop()
        del loop, cluster
    return (held[1] - held[0]) / trials


def master_loop(workers: int, strategy: str, trials: int, trial_seconds: float, step, options: dict,
                clock: str, folder: Path, sigma: float, fold=None):
    """The real master loop with its results file, against a simulated cluster: (loop, cluster, file)."""
    config = parse_config(experiment(strategy, trials, workers, options))
    space = config.space

    def duration(rng):
        return trial_seconds * rng.lognormal(-sigma * sigma / 2, sigma) if sigma else trial_seconds

    cluster = SimulatedCluster(workers, space, sphere, duration, step, clock=clock, seed=workers, fold=fold)
    path = folder / f"{strategy}-{workers}-{trial_seconds:g}.h5"
    writer = ResultsWriter.create(path, space, {"objective": "functions.py:hartmann6", "direction": "minimize",
                                                "budget": config.budget}, slots=workers, overwrite=True)
    writer.start_run(world_size=workers + 1, workers=workers, host="simulated")
    hellos = [Hello(rank, f"node{(rank - 1) // 8}", 0) for rank in range(1, workers + 1)]
    return MasterLoop(cluster, config, writer, hellos, RunOptions(progress="lines")), cluster, path


def compare_with_mpirun(args, step, folder: Path) -> None:
    """``--real N``: the same search on the simulated cluster (wall clock) and under mpirun with N workers whose
    trials sleep ``--trial`` seconds; the master's CPU per result of each, from the run's /runs row."""
    from bayes_quality import write_experiment  # noqa: PLC0415 - only this mode runs mpirun

    mpirun = Path(sys.executable).parent / "mpirun"
    print(f"{args.real} workers, trials sleeping {args.trial:g} s; master CPU per result from the /runs row (the "
          "master's run, start to close), on the wall clock both:\n  waiting: the polls and sleeps that found no "
          "message (master_wait_cpu_seconds); working: the rest (the simulation's\n  own workers taken out); "
          "busy master: the simulation on the virtual clock, its master never idle")
    print(f"{'phase':>14} {'trials':>7} {'working sim.':>13} {'working mpirun':>15} {'waiting sim.':>13} "
          f"{'waiting mpirun':>15} {'busy master':>12} {'util sim.':>10} {'util mpirun':>12}")
    for strategy in args.strategies:
        modes = [None] if strategy != "bayes" else args.sequential
        for mode in modes:
            options = {} if mode is None else {"sequential": {"true": True, "false": False, "auto": "auto"}[mode]}
            trials = max(int(args.rounds * args.real), 50)
            # The real trials sleep exactly --trial seconds: so do the simulated ones (random trials then end in
            # waves, and a flush takes a wave's results at once).
            working, _ = simulate(args.real, strategy, trials, args.trial, step, options, "virtual", folder, 0.0)
            stats, path = simulate(args.real, strategy, trials, args.trial, step, options, "real", folder, 0.0)
            simulated = read_results(path)
            sim_wait = simulated.runs[-1]["master_wait_cpu_seconds"] / trials
            sim_working = simulated.runs[-1]["master_cpu_seconds"] / trials - sim_wait - stats.simulated / trials
            config = experiment(strategy, trials, args.real, options)
            phases = "".join("[[phase]]\n" + "".join(f"{k} = {toml(v)}\n" for k, v in phase.items()) + "\n"
                             for phase in config["phase"])
            cwd = folder / f"mpirun-{strategy}-{mode}"
            cwd.mkdir()
            toml_path = write_experiment(cwd, "hartmann6", phases, seed=1, sleep=args.trial)
            env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
            subprocess.run([str(mpirun), "-n", str(args.real + 1), "--oversubscribe", "--bind-to", "none",
                            sys.executable, "-m", "hpc_hpo", "run", str(toml_path), "-q", "--overwrite"],
                           cwd=cwd, env=env, check=True, timeout=3600)
            real = read_results(cwd / "hartmann6-1.h5")
            real_cpu = real.runs[-1]["master_cpu_seconds"] / trials
            real_wait = real.runs[-1]["master_wait_cpu_seconds"] / trials
            rows = real.records()
            gaps = []
            for rank in {r["rank"] for r in rows}:
                mine = sorted((r for r in rows if r["rank"] == rank), key=lambda r: r["t_start"])
                gaps += [b["t_start"] - a["t_end"] for a, b in zip(mine, mine[1:], strict=False)]
            busy = sum(r["t_end"] - r["t_start"] for r in rows)
            util = busy / (busy + sum(gaps))  # as the simulation counts it: each worker's gaps between its trials
            label = strategy if mode is None else f"bayes/{mode}"
            print(f"{label:>14} {trials:>7} {1e3 * sim_working:>11.3f}ms {1e3 * (real_cpu - real_wait):>13.3f}ms "
                  f"{1e3 * sim_wait:>11.3f}ms {1e3 * real_wait:>13.3f}ms {1e3 * working.master_cpu / working.trials:>10.3f}ms "
                  f"{100 * stats.utilisation:>9.2f}% {100 * util:>11.2f}%")
            sys.stdout.flush()


def run_label(strategy: str, options: dict) -> str:
    if strategy != "bayes":
        return strategy
    return f"bayes/{str(options['sequential']).lower()}" + ("+la" if options.get("lookahead") else "")


def toml(value) -> str:
    return str(value).lower() if isinstance(value, bool) else repr(value) if isinstance(value, str) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 64, 512, 4096, 16384])
    parser.add_argument("--rounds", type=float, default=3, help="trials per worker in each run")
    parser.add_argument("--min-trials", type=int, default=2000)
    parser.add_argument("--strategies", nargs="+", default=["random", "bayes"])
    parser.add_argument("--trial-seconds", type=float, nargs="+", default=[1.0, 10.0, 60.0])
    parser.add_argument("--real", type=int, help="one run on the wall clock with this many workers")
    parser.add_argument("--trial", type=float, default=2.0, help="trial seconds of --real")
    parser.add_argument("--sequential", choices=["true", "false", "auto"], nargs="+", default=["true", "auto"],
                        help="the bayes phase's sequential option(s) to run")
    parser.add_argument("--lookahead", action="store_true",
                        help="the bayes runs again with lookahead = true: workers prepare each step shortly before "
                             "their trial ends and fold in what came since (a fold model is measured too)")
    parser.add_argument("--quick-model", action="store_true", help="measure the step model at fewer sizes")
    parser.add_argument("--memory-workers", type=int, default=4096,
                        help="workers of the master-memory runs (0: none)")
    parser.add_argument("--memory-trials", type=int, default=8192, help="the trials one more run of them adds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    step = StepModel(quick=args.quick_model)
    step.print()
    fold = None
    if args.lookahead:
        fold = FoldModel(quick=args.quick_model)
        fold.print()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.real:
            compare_with_mpirun(args, step, folder)
            return
        print()
        header = (f"{'phase':>14} {'workers':>8} {'trials':>7} {'CPU/result':>11} {'results/s':>10} {'task bytes':>11} "
                  f"{'pending':>8} {'observ.':>8}" + "".join(f"{f'util {t:g}s (step)':>17}" for t in args.trial_seconds))
        print(header)
        runs = [(s, {}) for s in args.strategies if s != "bayes"]
        if "bayes" in args.strategies:
            runs += [("bayes", {"sequential": {"true": True, "false": False, "auto": "auto"}[mode]})
                     for mode in args.sequential]
            if args.lookahead:
                runs += [("bayes", {**options, "lookahead": True}) for strategy, options in runs if strategy == "bayes"]
        for strategy, options in runs:
            label = run_label(strategy, options)
            for workers in args.workers:
                trials = max(int(args.rounds * workers), args.min_trials)
                cells, costs = [], []
                first = None
                for seconds in args.trial_seconds:
                    stats, _ = simulate(workers, strategy, trials, seconds, step, options, "virtual", folder,
                                        fold=fold if options.get("lookahead") else None)
                    first = first or stats
                    total = stats.busy + sum(stats.gaps)
                    cells.append(f"{100 * stats.utilisation:>8.2f}% ({100 * stats.steps / total:.1f})")
                    costs.append(stats.steady_cpu_per_result(workers))
                    sys.stdout.flush()
                # The master works the same way whatever the trials' length (it never sleeps on the virtual clock):
                # the median over the runs of this size is steadier than one run on a shared machine.
                cost = statistics.median(costs)
                bayes = max(first.bayes_tasks, 1)
                print(f"{label:>14} {workers:>8} {trials:>7} {1e3 * cost:>9.3f}ms {1 / cost:>10.0f} "
                      f"{first.task_bytes / first.tasks:>11.0f} {first.pending / bayes:>8.0f} "
                      f"{first.observations / bayes:>8.0f}" + "".join(cells))
                sys.stdout.flush()
        if args.memory_workers:
            print(f"\nmaster memory per trial, {args.memory_workers} workers ({args.memory_trials:,} more trials; "
                  "Python's allocations, tracemalloc):")
            for strategy, options in runs:
                label = run_label(strategy, options)
                per_trial = master_memory(args.memory_workers, strategy, args.memory_trials, step, options, folder)
                print(f"{label:>14} {per_trial:>8.0f} bytes")
                sys.stdout.flush()


if __name__ == "__main__":
    main()
