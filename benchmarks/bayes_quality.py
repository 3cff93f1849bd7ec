"""Sample efficiency on a suite of problems: regret after 50 and 100 evaluations, and rank. Prints tables.

    python benchmarks/bayes_quality.py                          # ours and random search, every problem
    python benchmarks/bayes_quality.py --peers all --seeds 20   # + Optuna GP/TPE, scikit-optimize, HEBO
    python benchmarks/bayes_quality.py --problems hartmann6 --mpi   # + real mpirun runs of ours
    python benchmarks/bayes_quality.py --problems hartmann6 --seeds 40 --below 0.01 0.1   # + seeds below each regret

The suite: Branin, Hartmann6, Ackley (5-D), Rosenbrock (4-D), Michalewicz (5-D), Griewank, a mixed
space standing in for a training loss, and three machine-learning tasks on scikit-learn's bundled
data (an SVM on digits, gradient-boosted trees on breast cancer, an MLP on wine; 3-fold
cross-validated error, mixed spaces of 3-5 parameters; their minimum is unknown, so the tables give
the best error reached instead of the regret).

Every method runs with 8 asynchronous workers (and ours with 1 worker too), simulated in one process
(:mod:`simulated_workers`): trial durations drawn from the seed, the same for every method, and every
evaluation and every suggestion computed for real. Ours does what its MPI workers do (10 Sobol
points, then each worker's own replica, the running points as pending); peers are
asked one point whenever a worker is free, with the running trials left running (Optuna) or told as
lies (scikit-optimize); HEBO has no notion of running points. ``--mpi`` adds real runs of ours under
``mpirun -n 9 --oversubscribe`` (each evaluation sleeps ``--sleep`` s so that workers overlap) and in
one process, which the simulation should match.

Per problem: median and worst regret (or error) at half the budget and at the budget, and each
method's mean rank over the seeds (1 = best value at the budget; ties share). Then the mean rank of
each method across the suite, the median time per suggestion, and for ours with 8 workers: exact
duplicates among proposed points, and Bayesian points within 1% of the unit-cube diagonal of a point
still running when they were proposed (the PHS failure: the same point evaluated twice at once).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _mpi import mpirun as launcher  # noqa: E402
from functions import PROBLEMS  # noqa: E402

from hpc_hpo._toml import toml_value  # noqa: E402
from hpc_hpo.results.reader import read_results  # noqa: E402
from hpc_hpo.run.scheduler import CHOOSING_LOAD, WORKERS_PER_CHOOSER  # noqa: E402
from hpc_hpo.search.space import parse_space  # noqa: E402

N_INIT = 10


def write_experiment(directory: Path, problem: str, strategy_phases: str, seed: int, sleep: float) -> Path:
    spec = PROBLEMS[problem]["space"]
    space = "\n".join(f"{name} = {toml_value(p)}" for name, p in spec.items())
    path = directory / f"{problem}-{seed}.toml"
    path.write_text(textwrap.dedent(f"""
        [experiment]
        name = "{problem}"
        objective = "{HERE / 'functions.py'}:{problem}"
        results = "{problem}-{seed}.h5"
        seed = {seed}
        max_initial_failures = 0

        [space]
        sleep = {{ type = "fixed", value = {sleep} }}
    """) + space + "\n" + strategy_phases)
    return path


def hpc_hpo_run(problem: str, seed: int, budget: int, workers: int, sleep: float, cwd: Path,
                strategy: str = "bayes") -> tuple[list[float], list[dict]]:
    phases = (f'[[phase]]\nstrategy = "sobol"\ntrials = {N_INIT}\n\n[[phase]]\nstrategy = "bayes"\ntrials = {budget - N_INIT}\n'
              if strategy == "bayes" else f'[[phase]]\nstrategy = "random"\ntrials = {budget}\n')
    config = write_experiment(cwd, problem, phases, seed, sleep if workers > 1 else 0.0)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    args = [sys.executable, "-m", "hpc_hpo", "run", str(config), "--overwrite", "-q"]
    if workers > 1:
        args = [launcher(), "-n", str(workers + 1), "--oversubscribe", "--bind-to", "none", *args]
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{done.stderr}")
    results = read_results(cwd / f"{problem}-{seed}.h5")
    finished = results.trials[: results.finished_rows]  # in the order trials finished
    return finished["value"].tolist(), results.records()


def regrets(values: list[float], minimum: float, at: int) -> float:
    return min(values[:at]) - minimum


def duplicates(problem: str, records: list[dict]) -> tuple[int, int, int]:
    """Among the Bayesian points: (exact duplicates of any other point, near-duplicates of an earlier
    point, near-duplicates of a point that was still running when this one was proposed)."""
    space = parse_space(PROBLEMS[problem]["space"])
    proposed = sorted((r for r in records if r["repeat"] == 0), key=lambda r: r["t_submit"])
    points = [{k: r[f"param_{k}"] for k in space.names} for r in proposed]
    exact = len(points) - len({space.key(p) for p in points})
    unit = space.to_unit(points)
    radius = 0.01 * math.sqrt(space.dim)
    near = concurrent = 0
    for a, record in enumerate(proposed):
        if record["strategy"] != "bayes" or a == 0:
            continue
        close = np.flatnonzero(np.linalg.norm(unit[:a] - unit[a], axis=1) < radius)
        near += len(close) > 0
        concurrent += any(proposed[b]["t_end"] > record["t_submit"] for b in close)
    return exact, near, concurrent


def rank_rows(best: dict[str, list[float]]) -> dict[str, float]:
    """Each method's mean rank over the seeds (1 = lowest value; ties share the mean of their ranks)."""
    methods = list(best)
    ranks: dict[str, list[float]] = {m: [] for m in methods}
    for seed in range(len(next(iter(best.values())))):
        values = [best[m][seed] for m in methods]
        for m, v in zip(methods, values, strict=True):
            below = sum(x < v for x in values)
            ties = sum(x == v for x in values)
            ranks[m].append(below + (ties + 1) / 2)
    return {m: statistics.mean(r) for m, r in ranks.items()}


def simulated_duplicates(problem: str, trials: list) -> tuple[int, int]:
    """(exact duplicates, points within 1% of the diagonal of one running when it was proposed)."""
    space = parse_space(PROBLEMS[problem]["space"])
    proposed = sorted(trials, key=lambda t: t.t_start)
    exact = len(proposed) - len({space.key(t.params) for t in proposed})
    unit = space.to_unit([t.params for t in proposed])
    radius = 0.01 * math.sqrt(space.dim)
    concurrent = 0
    for a in range(N_INIT, len(proposed)):
        close = np.flatnonzero(np.linalg.norm(unit[:a] - unit[a], axis=1) < radius)
        concurrent += any(proposed[b].t_end > proposed[a].t_start for b in close)
    return exact, concurrent


def main() -> None:
    from simulated_workers import METHODS, simulate

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", nargs="*", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--peers", default="", help="comma-separated: optuna-gp,optuna-tpe,skopt-gp,hebo, or all; "
                        "hpc_hpo-lookahead for ours with lookahead = true (prepared when the trial starts), "
                        "hpc_hpo-refresh (prepared shortly before it ends, as under MPI)")
    parser.add_argument("--below", type=float, nargs="*", default=[],
                        help="also count, per method, the seeds whose regret is below each of these values (e.g. 0.01 0.1)")
    parser.add_argument("--mpi", action="store_true", help="also run ours for real under mpirun and in one process")
    parser.add_argument("--sleep", type=float, default=0.05, help="with --mpi: seconds each evaluation sleeps")
    parser.add_argument("--step", type=float, default=0.0,
                        help="a choice takes this long (trials take 0.5-1.5): ours runs with sequential = true, "
                             "\"auto\" and false, workers choosing at once not knowing each other's points")
    args = parser.parse_args()
    peers = ["hpc_hpo-lookahead", "hpc_hpo-refresh", "optuna-gp", "optuna-tpe", "skopt-gp", "hebo"] if args.peers == "all" else \
        [p for p in args.peers.split(",") if p]
    half, w = args.budget // 2, args.workers
    ours = f"hpc_hpo, {w} workers"
    plan = [(ours, "hpc_hpo", w, None), ("hpc_hpo, 1 worker", "hpc_hpo", 1, None),
            ("hpc_hpo random", "hpc_hpo-random", w, None)]
    if args.step > 0:  # how many may choose at once, as the scheduler decides it (see WORKERS_PER_CHOOSER)
        least = -(-w // WORKERS_PER_CHOOSER)
        auto = max(least, min(w, math.ceil(w * args.step / (CHOOSING_LOAD * 1.0))))  # trials take 1.0 on average
        plan[0] = (f"hpc_hpo, {w} workers, sequential", "hpc_hpo", w, least)
        plan.insert(1, (f"hpc_hpo, {w} workers, auto ({auto} at once)", "hpc_hpo", w, auto))
        plan.insert(2, (f"hpc_hpo, {w} workers, all at once", "hpc_hpo", w, w))
        ours = plan[0][0]
    plan += [(f"{peer}, {w} workers", peer, w, w) for peer in peers]

    tables, suite_ranks, times, dup_rows, counts = [], {}, {}, [], []
    with tempfile.TemporaryDirectory() as tmp:
        for problem in args.problems:
            minimum = PROBLEMS[problem]["minimum"]
            offset = minimum if minimum is not None else 0.0
            curves: dict[str, list[list[float]]] = {}
            dups: dict[str, list] = {}
            started = time.monotonic()
            for label, method, workers, choosers in plan:
                for seed in range(args.seeds):
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        instance = METHODS[method](problem, seed, workers)
                        trials = simulate(instance, args.budget, args.step if workers > 1 else 0.0, choosers)
                    curves.setdefault(label, []).append([t.value for t in trials])
                    times.setdefault(label, []).append(instance.seconds / args.budget)
                    if label == ours or (args.step > 0 and label.startswith(f"hpc_hpo, {w} workers")):
                        dups.setdefault(label, []).append(simulated_duplicates(problem, trials))
            if args.mpi:
                for seed in range(args.seeds):
                    values, _ = hpc_hpo_run(problem, seed, args.budget, w, args.sleep, Path(tmp))
                    curves.setdefault(f"hpc_hpo, {w} workers, mpirun", []).append(values)
                    values, _ = hpc_hpo_run(problem, seed, args.budget, 1, args.sleep, Path(tmp))
                    curves.setdefault("hpc_hpo, 1 worker, one process", []).append(values)
            best_at = {m: [min(v[:args.budget]) for v in runs] for m, runs in curves.items()}
            ranks = rank_rows(best_at)
            for method, runs in curves.items():
                at_half = [min(v[:half]) - offset for v in runs]
                at_full = [min(v[:args.budget]) - offset for v in runs]
                tables.append((problem, method, statistics.median(at_half), max(at_half), statistics.median(at_full),
                               max(at_full), ranks[method]))
                counts.append((problem, method, [(sum(r < x for r in at_half), sum(r < x for r in at_full), len(runs))
                                                 for x in args.below]))
                suite_ranks.setdefault(method, []).append(ranks[method])
            for label, found in dups.items():
                dup_rows.append((problem, label, sum(d[0] for d in found), sum(d[1] for d in found),
                                 args.seeds * (args.budget - N_INIT)))
            print(f"# {problem}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)

    print(f"\nregret (best value minus the minimum; for the ML tasks the best cross-validated error), "
          f"{args.seeds} seeds, {N_INIT} initial points")
    print(f"{'problem':<18} {'method':<34} {'median@' + str(half):>11} {'worst@' + str(half):>10} "
          f"{'median@' + str(args.budget):>11} {'worst@' + str(args.budget):>10} {'rank':>5}")
    for problem, method, med_half, worst_half, med_full, worst_full, rank in tables:
        print(f"{problem:<18} {method:<34} {med_half:>11.3g} {worst_half:>10.3g} {med_full:>11.3g} "
              f"{worst_full:>10.3g} {rank:>5.2f}")
    if args.below:
        print(f"\nseeds whose regret is below each value, at {half} / {args.budget} evaluations")
        print(f"{'problem':<18} {'method':<34} " + " ".join(f"{'< ' + format(x, 'g'):>14}" for x in args.below))
        for problem, method, found in counts:
            print(f"{problem:<18} {method:<34} " + " ".join(f"{f'{a}/{n} , {b}/{n}':>14}" for a, b, n in found))
    print(f"\nmean rank across the {len(args.problems)} problems (rank at {args.budget} evaluations per seed, "
          f"averaged), and the time spent choosing per evaluation (median over runs)")
    for method, ranks in sorted(suite_ranks.items(), key=lambda item: statistics.mean(item[1])):
        per = statistics.median(times[method]) * 1e3 if method in times else float("nan")
        print(f"  {method:<34} {statistics.mean(ranks):5.2f}   {per:8.1f} ms")
    print("\nours: duplicates among proposed points (all seeds)")
    print(f"{'problem':<18} {'method':<34} {'exact':>6} {'near a running point':>21} {'Bayesian points':>16}")
    for problem, label, exact, concurrent, total in dup_rows:
        print(f"{problem:<18} {label:<34} {exact:>6} {concurrent:>21} {total:>16}")


if __name__ == "__main__":
    main()
