"""Sample efficiency: simple regret after 50 and 100 evaluations. Prints tables; not a pass/fail test.

    python benchmarks/bayes_quality.py                       # ours only (hpc_hpo's own dependencies)
    python benchmarks/bayes_quality.py --peers all           # + Optuna GP/TPE and scikit-optimize

Ours, in the same run: 10 Sobol points then Bayesian, with 8 asynchronous workers under real
``mpirun -n 9 --oversubscribe`` (each evaluation sleeps ``--sleep`` seconds so that workers
overlap) and with 1 worker (one process); random search (ours). Peers (``pip install optuna
scikit-optimize`` and a CPU torch for Optuna's GP) are given the same 10 random start points
budget and ask 8 points at a time: Optuna's GPSampler and TPESampler (constant liar), and
scikit-optimize's GP (``Optimizer.ask(n_points=8)``, constant liar).

Also counts, for our 8-worker runs, exact duplicates among proposed points, and Bayesian points
closer than 1% of the unit-cube diagonal to an earlier point (near-duplicates: late in a run
these are mostly refinements next to the best point), and how many of those were close to a
point still running when they were proposed (concurrent: the PHS failure, the same point
evaluated twice at once).
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


# --- peers ---------------------------------------------------------------------------------


def _optuna(problem: str, seed: int, budget: int, sampler_name: str) -> list[float]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    spec, f = PROBLEMS[problem]["space"], PROBLEMS[problem]["function"]
    dists = {}
    for name, p in spec.items():
        if p["type"] == "float":
            dists[name] = optuna.distributions.FloatDistribution(p["low"], p["high"], log=p.get("log", False))
        elif p["type"] == "int":
            dists[name] = optuna.distributions.IntDistribution(p["low"], p["high"], log=p.get("log", False))
        else:
            dists[name] = optuna.distributions.CategoricalDistribution(p["choices"])
    if sampler_name == "gp":
        sampler = optuna.samplers.GPSampler(seed=seed, n_startup_trials=N_INIT)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=N_INIT, constant_liar=True)
    study = optuna.create_study(sampler=sampler)
    values: list[float] = []
    while len(values) < budget:
        trials = [study.ask(dists) for _ in range(min(8, budget - len(values)))]
        for trial in trials:
            values.append(f(trial.params))
            study.tell(trial, values[-1])
    return values


def _skopt(problem: str, seed: int, budget: int) -> list[float]:
    from skopt import Optimizer
    from skopt.space import Categorical, Integer, Real

    spec, f = PROBLEMS[problem]["space"], PROBLEMS[problem]["function"]
    dims, names = [], list(spec)
    for p in spec.values():
        prior = "log-uniform" if p.get("log") else "uniform"
        if p["type"] == "float":
            dims.append(Real(p["low"], p["high"], prior=prior))
        elif p["type"] == "int":
            dims.append(Integer(p["low"], p["high"], prior=prior))
        else:
            dims.append(Categorical(p["choices"]))
    opt = Optimizer(dims, base_estimator="GP", n_initial_points=N_INIT, random_state=seed)
    values: list[float] = []
    while len(values) < budget:
        xs = opt.ask(n_points=min(8, budget - len(values)), strategy="cl_min")
        ys = [f(dict(zip(names, [v.item() if hasattr(v, "item") else v for v in x], strict=True))) for x in xs]
        opt.tell(xs, ys)
        values.extend(ys)
    return values


PEERS = {
    "optuna-gp": lambda problem, seed, budget: _optuna(problem, seed, budget, "gp"),
    "optuna-tpe": lambda problem, seed, budget: _optuna(problem, seed, budget, "tpe"),
    "skopt-gp": _skopt,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", nargs="*", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--sleep", type=float, default=0.05, help="seconds each evaluation sleeps with 8 workers")
    parser.add_argument("--peers", default="", help="comma-separated: optuna-gp,optuna-tpe,skopt-gp, or all")
    args = parser.parse_args()
    peers = list(PEERS) if args.peers == "all" else [p for p in args.peers.split(",") if p]
    half = args.budget // 2

    rows = []
    dup_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        for problem in args.problems:
            minimum = PROBLEMS[problem]["minimum"]
            methods: dict[str, list[list[float]]] = {}
            dups = []
            for seed in range(args.seeds):
                started = time.monotonic()
                values, records = hpc_hpo_run(problem, seed, args.budget, 8, args.sleep, cwd)
                methods.setdefault("hpc_hpo bayes, 8 workers", []).append(values)
                dups.append(duplicates(problem, records))
                values, _ = hpc_hpo_run(problem, seed, args.budget, 1, args.sleep, cwd)
                methods.setdefault("hpc_hpo bayes, 1 worker", []).append(values)
                values, _ = hpc_hpo_run(problem, seed, args.budget, 1, args.sleep, cwd, strategy="random")
                methods.setdefault("hpc_hpo random", []).append(values)
                for peer in peers:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        methods.setdefault(f"{peer}, batches of 8", []).append(PEERS[peer](problem, seed, args.budget))
                print(f"# {problem} seed {seed}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
            for method, runs in methods.items():
                at_half = [regrets(v, minimum, half) for v in runs]
                at_full = [regrets(v, minimum, args.budget) for v in runs]
                rows.append((problem, method, statistics.median(at_half), max(at_half),
                             statistics.median(at_full), max(at_full)))
            dup_rows.append((problem, sum(d[0] for d in dups), sum(d[1] for d in dups), sum(d[2] for d in dups),
                             args.seeds * (args.budget - N_INIT)))

    print(f"\nsimple regret (best value minus the minimum), {args.seeds} seeds; 10 initial points, then the method")
    print(f"{'problem':<10} {'method':<30} {'median@' + str(half):>11} {'worst@' + str(half):>10} "
          f"{'median@' + str(args.budget):>11} {'worst@' + str(args.budget):>10}")
    for problem, method, med_half, worst_half, med_full, worst_full in rows:
        print(f"{problem:<10} {method:<30} {med_half:>11.2e} {worst_half:>10.2e} {med_full:>11.2e} {worst_full:>10.2e}")
    print("\nhpc_hpo bayes with 8 workers: duplicates among proposed points (all seeds)")
    print(f"{'problem':<10} {'exact':>6} {'near an earlier point':>22} {'near a running point':>21} {'Bayesian points':>16}")
    for problem, exact, near, concurrent, total in dup_rows:
        print(f"{problem:<10} {exact:>6} {near:>22} {concurrent:>21} {total:>16}")


if __name__ == "__main__":
    main()
