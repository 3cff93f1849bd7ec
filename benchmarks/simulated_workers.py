"""Asynchronous workers simulated in one process: real Bayesian steps, simulated trial durations.

A run of ``budget`` evaluations with ``workers`` workers: each trial takes a duration drawn from
the seed (uniform 0.5-1.5 time units), so that workers finish in a realistic interleaved order;
the objective itself is evaluated for real (a test function, or a cross-validated model). Every
method sees the same durations for the same seed. Time is simulated, so a run costs only the
methods' own computation and the evaluations.

Methods (:data:`METHODS`):

- ``hpc_hpo``: what the workers of ``mpirun -n workers+1 python -m hpc_hpo run`` do, step for step:
  10 Sobol points from the phase's stream, then each worker has its own replica
  (:class:`BayesSuggester`, seeded as on MPI), told every result that finished before its step and
  the points running elsewhere. ``hpc_hpo-lookahead``: with a bayes phase's ``lookahead = true``,
  each worker prepares its next step while its trial runs, with that trial as pending, and folds
  in what finished meanwhile when the trial ends.
- ``hpc_hpo-random``: our random search.
- ``optuna-gp`` / ``optuna-tpe``: Optuna's GPSampler / TPESampler (constant liar), asked one point
  whenever a worker is free, the other workers' trials left running in the study.
- ``skopt-gp``: scikit-optimize's GP, asked a batch of one point per worker (constant liar) whenever its
  last batch is handed out (asking one point with the running ones as lies took 5 s a point).
- ``hebo``: HEBO, asked one point whenever a worker is free (it has no notion of running points).

Peers are optional (``pip install -e .[bench]``, and torch for Optuna's GPSampler; HEBO pins numpy <
1.25, so ``pip install --no-deps hebo gpytorch linear_operator jaxtyping pymoo==0.6.1.3 alive-progress pandas
disjoint-set``: pymoo 0.6.2 imports a package HEBO does not list); a method whose package is missing raises
ImportError naming it.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from functions import PROBLEMS

from hpc_hpo.search.gp.suggester import BayesSuggester
from hpc_hpo.search.space import parse_space
from hpc_hpo.search.strategies.sobol import SobolStrategy

N_INIT = 10


def durations(seed: int, n: int) -> np.ndarray:
    """The simulated duration of each trial, in the order trials start."""
    return np.random.default_rng([seed, 12345]).uniform(0.5, 1.5, size=n)


class Method:
    """One optimiser as the simulation drives it: ``ask(worker, pending)`` a point, ``tell`` its value."""

    def __init__(self, problem: str, seed: int, workers: int):
        self.problem, self.seed, self.workers = problem, seed, workers
        self.spec = PROBLEMS[problem]["space"]
        self.space = parse_space(self.spec)
        self.seconds = 0.0  # time spent choosing points (the critical path of a worker)

    def ask(self, worker: int, pending: list[dict]) -> dict:
        raise NotImplementedError

    def tell(self, worker: int, params: dict, value: float) -> None:
        pass

    def started(self, worker: int, params: dict, pending: list[dict]) -> None:
        """The worker started evaluating ``params`` (with ``pending`` running elsewhere)."""

    #: With a look-ahead that refreshes (ours under MPI with trials in a child process): how long before its trial
    #: ends a worker asks for the latest results and prepares its next step (a 45-ms step, the poll and the
    #: messages, against trials of 0.5-1.5 s); None: no refresh.
    refresh_lead: float | None = None

    def refresh(self, worker: int, pending: list[dict]) -> None:
        """``refresh_lead`` before its trial ends: the worker learns what finished and prepares its next step."""


class HpcHpo(Method):
    def __init__(self, problem, seed, workers, lookahead: bool = False, options: dict | None = None,
                 refresh_lead: float | None = None):
        super().__init__(problem, seed, workers)
        self.refresh_lead = refresh_lead
        self.initial = SobolStrategy(self.space, {}, np.random.default_rng([seed, 1]))
        ranks = range(1, workers + 1) if workers > 1 else [0]
        self.replicas = [BayesSuggester(self.space, True, np.random.default_rng([seed, 0, r])) for r in ranks]
        self.history: list[tuple[dict, float]] = []
        self.seen = [0] * workers
        self.lookahead = lookahead
        self.options = options or {}
        self.asked = 0

    def ask(self, worker, pending, slot=0):
        self.asked += 1
        if self.asked <= N_INIT:
            return self.initial.ask()
        replica = self.replicas[worker]
        replica.update(self.history[self.seen[worker]:])
        self.seen[worker] = len(self.history)
        started = time.perf_counter()
        params = replica.suggest(pending, self.options, slot)
        self.seconds += time.perf_counter() - started
        return params

    def started(self, worker, params, pending):
        if self.lookahead and self.refresh_lead is None and self.asked > N_INIT:  # off the critical path
            self.replicas[worker].prepare([*pending, params], self.options)

    def refresh(self, worker, pending):
        if self.asked >= N_INIT:  # as the worker does on the master's Update: the results since, then the step
            replica = self.replicas[worker]
            replica.update(self.history[self.seen[worker]:])
            self.seen[worker] = len(self.history)
            replica.prepare(pending, self.options)

    def tell(self, worker, params, value):
        self.history.append((params, value))


class Random(Method):
    def __init__(self, problem, seed, workers):
        super().__init__(problem, seed, workers)
        self.rng = np.random.default_rng([seed, 1])

    def ask(self, worker, pending):
        return self.space.sample(self.rng, 1)[0]


class Optuna(Method):
    def __init__(self, problem, seed, workers, sampler: str):
        super().__init__(problem, seed, workers)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        self.distributions = {}
        for name, p in self.spec.items():
            if p["type"] == "float":
                d = optuna.distributions.FloatDistribution(p["low"], p["high"], log=p.get("log", False))
            elif p["type"] == "int":
                d = optuna.distributions.IntDistribution(p["low"], p["high"], log=p.get("log", False))
            else:
                d = optuna.distributions.CategoricalDistribution(p["choices"])
            self.distributions[name] = d
        if sampler == "gp":
            chosen = optuna.samplers.GPSampler(seed=seed, n_startup_trials=N_INIT)
        else:
            chosen = optuna.samplers.TPESampler(seed=seed, n_startup_trials=N_INIT, constant_liar=True)
        self.study = optuna.create_study(sampler=chosen)
        self.trials: dict[int, Any] = {}

    def ask(self, worker, pending):
        started = time.perf_counter()
        trial = self.study.ask(self.distributions)
        self.seconds += time.perf_counter() - started
        self.trials[worker] = trial
        return dict(trial.params)

    def tell(self, worker, params, value):
        self.study.tell(self.trials.pop(worker), value)


class Skopt(Method):
    def __init__(self, problem, seed, workers):
        super().__init__(problem, seed, workers)
        from skopt import Optimizer
        from skopt.space import Categorical, Integer, Real

        dims = []
        for p in self.spec.values():
            prior = "log-uniform" if p.get("log") else "uniform"
            if p["type"] == "float":
                dims.append(Real(p["low"], p["high"], prior=prior))
            elif p["type"] == "int":
                dims.append(Integer(p["low"], p["high"], prior=prior))
            else:
                dims.append(Categorical(p["choices"]))
        self.names = list(self.spec)
        self.optimizer = Optimizer(dims, base_estimator="GP", n_initial_points=N_INIT, random_state=seed)
        self.queue: list = []

    def _point(self, x):
        return dict(zip(self.names, [v.item() if hasattr(v, "item") else v for v in x], strict=True))

    def ask(self, worker, pending):
        # Asking one point with the running ones as lies refits its GP once per lie (5 s a point at 50): so a
        # batch of one point per worker, each after lies at the best value so far, handed out as workers free up.
        started = time.perf_counter()
        if not self.queue:
            self.queue = list(self.optimizer.ask(n_points=self.workers, strategy="cl_min"))
        x = self.queue.pop(0)
        self.seconds += time.perf_counter() - started
        return self._point(x)

    def tell(self, worker, params, value):
        self.optimizer.tell([params[n] for n in self.names], value)


class Hebo(Method):
    def __init__(self, problem, seed, workers):
        super().__init__(problem, seed, workers)
        import pandas as pd
        from hebo.design_space.design_space import DesignSpace
        from hebo.optimizers.hebo import HEBO

        self.pd = pd
        rows = []
        for name, p in self.spec.items():
            if p["type"] == "float":
                rows.append({"name": name, "type": "pow" if p.get("log") else "num", "lb": p["low"], "ub": p["high"]})
            elif p["type"] == "int":
                rows.append({"name": name, "type": "pow_int" if p.get("log") else "int", "lb": p["low"], "ub": p["high"]})
            else:
                rows.append({"name": name, "type": "cat", "categories": list(p["choices"])})
        np.random.seed(seed)  # HEBO draws from numpy's global stream
        import torch

        torch.manual_seed(seed)
        self.optimizer = HEBO(DesignSpace().parse(rows), rand_sample=N_INIT)

    def ask(self, worker, pending):
        started = time.perf_counter()
        frame = self.optimizer.suggest(n_suggestions=1)
        self.seconds += time.perf_counter() - started
        row = frame.iloc[0].to_dict()
        out = {}
        for name, p in self.spec.items():
            v = row[name]
            out[name] = int(round(float(v))) if p["type"] == "int" else (float(v) if p["type"] == "float" else v)
        return out

    def tell(self, worker, params, value):
        frame = self.pd.DataFrame([params])
        self.optimizer.observe(frame, np.array([[value]]))


METHODS: dict[str, Callable[..., Method]] = {
    "hpc_hpo": HpcHpo,
    "hpc_hpo-lookahead": lambda problem, seed, workers: HpcHpo(problem, seed, workers, lookahead=True),
    "hpc_hpo-refresh": lambda problem, seed, workers: HpcHpo(problem, seed, workers, lookahead=True,
                                                             refresh_lead=0.075),
    "hpc_hpo-random": Random,
    "optuna-gp": lambda problem, seed, workers: Optuna(problem, seed, workers, "gp"),
    "optuna-tpe": lambda problem, seed, workers: Optuna(problem, seed, workers, "tpe"),
    "skopt-gp": Skopt,
    "hebo": Hebo,
}


class Trial(NamedTuple):
    params: dict
    value: float
    t_start: float
    t_end: float


def simulate(method: Method, budget: int, step: float = 0.0, choosers: int | None = None) -> list[Trial]:
    """Run ``budget`` evaluations with ``method.workers`` asynchronous workers; the trials in the order
    they finished.

    ``step`` > 0: choosing a point takes that long (simulated time, trials take 0.5-1.5): workers that
    choose at the same moment do not know each other's points (ours tells each its slot among them),
    and at most ``choosers`` choose at once (None: any number), the others waiting for a free place,
    as ``sequential`` has the master do.
    """
    if step > 0:
        return _simulate_with_steps(method, budget, step, choosers)
    f = PROBLEMS[method.problem]["function"]
    durations_ = durations(method.seed, budget)
    running: dict[int, tuple[dict, float]] = {}
    events: list[tuple[float, int, int]] = []  # (time, kind: 0 refresh / 1 end, worker)
    trials: list[Trial] = []
    issued = 0

    def start(worker: int, now: float) -> None:
        nonlocal issued
        if issued >= budget:
            return
        pending = [p for w, (p, _) in running.items() if w != worker]
        params = method.ask(worker, pending)
        running[worker] = (params, now)
        method.started(worker, params, pending)
        end = now + durations_[issued]
        if method.refresh_lead is not None:
            heapq.heappush(events, (max(now, end - method.refresh_lead), 0, worker))
        heapq.heappush(events, (end, 1, worker))
        issued += 1

    for worker in range(method.workers):
        start(worker, 0.0)
    while events:
        now, kind, worker = heapq.heappop(events)
        if kind == 0:
            method.refresh(worker, [p for p, _ in running.values()])  # its own trial among the running ones
            continue
        params, began = running.pop(worker)
        value = f(params)
        trials.append(Trial(params, value if math.isfinite(value) else math.inf, began, now))
        method.tell(worker, params, value)
        start(worker, now)
    return trials


def _simulate_with_steps(method: Method, budget: int, step: float, choosers: int | None) -> list[Trial]:
    f = PROBLEMS[method.problem]["function"]
    durations_ = durations(method.seed, budget)
    running: dict[int, tuple[dict, float]] = {}  # points known to the others (chosen), and when they started
    choosing: dict[int, tuple[int, dict]] = {}  # worker -> (slot, its point, not yet known to the others)
    waiting: list[int] = []
    events: list[tuple[float, int, int, int]] = []  # (time, order, kind 0 chosen / 1 done, worker)
    trials: list[Trial] = []
    issued = 0
    order = 0

    def push(when: float, kind: int, worker: int) -> None:
        nonlocal order
        heapq.heappush(events, (when, order, kind, worker))
        order += 1

    def choose(worker: int, now: float) -> None:
        nonlocal issued
        if issued >= budget:
            return
        if choosers is not None and len(choosing) >= choosers:
            waiting.append(worker)
            return
        pending = [p for w, (p, _) in running.items() if w != worker]
        slot = next(i for i in range(len(choosing) + 1) if i not in {s for s, _ in choosing.values()})
        params = method.ask(worker, pending, slot) if isinstance(method, HpcHpo) else method.ask(worker, pending)
        choosing[worker] = (slot, params)
        issued += 1
        push(now + step, 0, worker)

    for worker in range(method.workers):
        choose(worker, 0.0)
    started = 0
    while events:
        now, _, kind, worker = heapq.heappop(events)
        if kind == 0:  # its point is chosen: the trial starts, the point is pending for the others
            _, params = choosing.pop(worker)
            running[worker] = (params, now)
            push(now + durations_[started], 1, worker)
            started += 1
            while waiting and (choosers is None or len(choosing) < choosers):
                choose(waiting.pop(0), now)
        else:
            params, began = running.pop(worker)
            value = f(params)
            trials.append(Trial(params, value if math.isfinite(value) else math.inf, began, now))
            method.tell(worker, params, value)
            choose(worker, now)
    return trials
