"""Seconds per Bayesian suggestion against the number of observations, 6-D, one core. A table, not a test.

    python benchmarks/suggest_time.py            # ours and scikit-learn's GaussianProcessRegressor
    python benchmarks/suggest_time.py --peers    # + Optuna's GPSampler and scikit-optimize, if installed

Ours is measured as a worker sees it in a run: one new result arrives, then one suggestion with
7 points pending elsewhere, for 2 x REFIT_EVERY steps in a row. Past ALWAYS_REFIT_BELOW points the
hyperparameters are refitted only every REFIT_EVERY steps, so the table shows the mean over all
steps (refits included: what a search pays per point, and the baseline of the ratios), the
refitting step on its own, and a step between refits. scikit-learn's GaussianProcessRegressor
(Matern-5/2 ARD + white noise, fitted from its default start, then predicting as many candidates
as we score) refits at every call: compare it with our refitting step as well as with the mean.
Peers: ``study.ask()`` of Optuna's GPSampler after n finished trials; ``tell`` of one new point
then ``ask`` for scikit-optimize's GP. A peer is skipped at larger n once one step takes more
than ``--cap`` seconds. Every method is run once at n = 20 first, so that imports and first
calls do not count.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))

from functions import PROBLEMS  # noqa: E402

from hpc_hpo.search.gp.optimize import N_LOCAL, N_SOBOL  # noqa: E402
from hpc_hpo.search.gp.suggester import REFIT_EVERY, BayesSuggester  # noqa: E402
from hpc_hpo.search.space import parse_space  # noqa: E402

SIZES = (50, 100, 200, 400, 1000, 2000)
H6 = PROBLEMS["hartmann6"]


def history(n: int, seed: int = 0) -> tuple[list[dict], list[float]]:
    space = parse_space(H6["space"])
    points = space.sample(np.random.default_rng(seed), n + 10)
    return points, [H6["function"](p) for p in points]


def ours(n: int) -> tuple[float, float, float]:
    """Seconds per step over 2 x REFIT_EVERY steps: (mean of all, mean of refitting steps, mean of the others)."""
    space = parse_space(H6["space"])
    steps = 2 * REFIT_EVERY
    points, values = history(n + steps)
    suggester = BayesSuggester(space, True, np.random.default_rng(1))
    suggester.update(zip(points[: n - 1], values[: n - 1], strict=True))
    pending = points[n + steps: n + steps + 7]
    suggester.suggest(pending)  # the replica's first fit, from scratch
    refits, plain = [], []
    for i in range(steps):
        fits = suggester._fits
        started = time.perf_counter()
        suggester.update([(points[n - 1 + i], values[n - 1 + i])])
        suggester.suggest(pending)
        seconds = time.perf_counter() - started
        (refits if suggester._fits > fits else plain).append(seconds)
    return (statistics.fmean(refits + plain), statistics.fmean(refits) if refits else float("nan"),
            statistics.fmean(plain) if plain else float("nan"))


def sklearn_gpr(n: int) -> float:
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    points, values = history(n)
    X = np.array([[p[f"x{i}"] for i in range(6)] for p in points[:n]])
    y = np.array(values[:n])
    candidates = np.random.default_rng(2).random((N_SOBOL + N_LOCAL, 6))
    started = time.perf_counter()
    kernel = ConstantKernel() * Matern(np.full(6, 0.5), nu=2.5) + WhiteKernel(1e-3)
    GaussianProcessRegressor(kernel, normalize_y=True).fit(X, y).predict(candidates, return_std=True)
    return time.perf_counter() - started


def optuna_gp(n: int, repeats: int = 3) -> float:
    import optuna
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    points, values = history(n)
    dists = {f"x{i}": optuna.distributions.FloatDistribution(0.0, 1.0) for i in range(6)}
    study = optuna.create_study(sampler=optuna.samplers.GPSampler(seed=0))
    study.add_trials([optuna.trial.create_trial(params=p, distributions=dists, value=v)
                      for p, v in zip(points[:n], values[:n], strict=True)])
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        trial = study.ask(dists)
        times.append(time.perf_counter() - started)
        study.tell(trial, H6["function"](trial.params))
    return statistics.median(times)


def skopt_gp(n: int, repeats: int = 2) -> float:
    from skopt import Optimizer

    points, values = history(n)
    opt = Optimizer([(0.0, 1.0)] * 6, base_estimator="GP", n_initial_points=0, random_state=0)
    X = [[p[f"x{i}"] for i in range(6)] for p in points]
    opt.tell(X[: n - 1], values[: n - 1], fit=False)
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        opt.tell(X[n - 1 + i], values[n - 1 + i])
        opt.ask()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", action="store_true", help="also Optuna's GPSampler and scikit-optimize")
    parser.add_argument("--cap", type=float, default=20.0, help="skip a method at larger n once it takes longer")
    args = parser.parse_args()
    methods = {"sklearn GPR": sklearn_gpr}
    if args.peers:
        methods.update({"optuna GPSampler": optuna_gp, "skopt gp": skopt_gp})
    print("seconds per suggestion, Hartmann6 (6-D), one core; ratio = method / hpc_hpo's mean step (refits included)")
    print(f"{'n':>6} {'hpc_hpo mean':>13} {'refit step':>11} {'other steps':>12} " +
          " ".join(f"{m:>17}" for m in methods) + f" {'sklearn/refit':>14}")
    skipped: set[str] = set()
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours(20)
        for method in methods.values():
            method(20)  # warm up: imports and first-call costs would otherwise land on the first row
        for n in SIZES:
            mean, refit, other = ours(n)
            cells, sklearn_seconds = [], float("nan")
            for name, method in methods.items():
                if name in skipped:
                    cells.append(f"{'skipped':>17}")
                    continue
                seconds = method(n)
                if name == "sklearn GPR":
                    sklearn_seconds = seconds
                cells.append(f"{seconds:>8.3f} ({seconds / mean:>5.1f}x)")
                if seconds > args.cap:
                    skipped.add(name)
            print(f"{n:>6} {mean:>13.3f} {refit:>11.3f} {other:>12.3f} " + " ".join(cells) +
                  f" {sklearn_seconds / refit:>13.1f}x", flush=True)


if __name__ == "__main__":
    main()
