"""Search strategies. Every strategy passes the same contract; each has its own tests too."""

from __future__ import annotations

import numpy as np
import pytest

from hpc_hpo.errors import ConfigError
from hpc_hpo.search.gp.suggester import BayesSuggester
from hpc_hpo.search.space import parse_space
from hpc_hpo.search.strategies import STRATEGIES, BayesStrategy, ExplicitStrategy, GridStrategy, RandomStrategy, SobolStrategy

SPACE = parse_space({
    "x": {"type": "float", "low": -5.0, "high": 5.0},
    "lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
    "units": {"type": "int", "low": 16, "high": 512, "log": True},
    "act": {"type": "categorical", "choices": ["relu", "tanh", "elu"]},
    "bs": {"type": "fixed", "value": 64},
})


def make(cls, raw_options, seed=0, space=SPACE):
    options = cls.parse_options(raw_options, space, "phase[1]")
    return cls(space, options, np.random.default_rng(seed))


def loss(point):
    return (point["x"] - 1.0) ** 2 + abs(np.log10(point["lr"]) + 3) + {"relu": 0, "tanh": 1, "elu": 2}[point["act"]]


class StrategyContract:
    """What every strategy promises: valid points of the space, reproducible from the seed,
    whatever the pending points and failed trials around it.

    Points come from ``ask`` on the master, or, for strategies that choose on the worker
    (bayes), from the worker's suggester, fed the same results.
    """

    cls = None
    options: dict = {}
    n = 20

    def points(self, seed=0, n=None, fail_every=0, pending=()):
        options = self.cls.parse_options(self.options, SPACE, "phase[1]")
        if self.cls.suggests_on_worker:
            suggester = BayesSuggester(SPACE, True, np.random.default_rng(seed))
            ask = lambda: suggester.suggest(list(pending), options)  # noqa: E731
            tell = lambda point, value: suggester.update([(point, value)])  # noqa: E731
        else:
            strategy = self.cls(SPACE, options, np.random.default_rng(seed))
            ask, tell = strategy.ask, strategy.tell
        out = []
        for i in range(n or self.n):
            point = ask()
            if point is None:
                break
            out.append(point)
            tell(point, None if fail_every and i % fail_every == 0 else loss(point))
        return out

    def test_registered_by_name(self):
        assert STRATEGIES[self.cls.name] is self.cls

    def test_points_are_valid_points_of_the_space(self):
        points = self.points()
        assert points
        for point in points:
            assert SPACE.check_point(point, "p") == point  # in bounds, right types, every parameter
            assert type(point["units"]) is int and type(point["x"]) is float

    def test_same_seed_same_points(self):
        assert self.points(seed=5) == self.points(seed=5)

    def test_failed_trials_and_pending_points_are_handled(self):
        pending = [{"x": 1.0, "lr": 1e-3, "units": 64, "act": "relu", "bs": 64}]
        points = self.points(seed=3, fail_every=3, pending=pending)
        assert points and all(SPACE.check_point(p, "p") == p for p in points)
        if self.cls.suggests_on_worker:  # it knows what runs elsewhere and never proposes it
            assert pending[0] not in points



class SizedContract(StrategyContract):
    """Strategies whose options fix their size (explicit, grid) hand out exactly that many points."""

    def test_runs_dry_at_its_size(self):
        assert not self.cls.sized_by_trials
        size = self.cls.fixed_size(self.cls.parse_options(self.options, SPACE, "w"), SPACE)
        strategy = make(self.cls, self.options)
        assert [strategy.ask() is not None for _ in range(size)] == [True] * size
        assert strategy.ask() is None


class TestExplicit(SizedContract):
    cls = ExplicitStrategy
    options = {"points": [
        {"x": 0.5, "lr": 1e-3, "units": 64, "act": "relu"},
        {"x": -1, "lr": 1e-2, "units": 128, "act": "tanh", "bs": 64},
    ]}

    def test_in_order_with_fixed_values_filled_in(self):
        assert self.points() == [
            {"x": 0.5, "lr": 1e-3, "units": 64, "act": "relu", "bs": 64},
            {"x": -1.0, "lr": 1e-2, "units": 128, "act": "tanh", "bs": 64},
        ]

    @pytest.mark.parametrize("options, message", [
        ({}, r"phase\[1\].points: is required for strategy 'explicit'"),
        ({"points": []}, r"phase\[1\].points: must be a non-empty list of parameter tables \(got \[\]\)"),
        ({"points": [{"x": 9.0, "lr": 1e-3, "units": 64, "act": "relu"}]}, r"phase\[1\].points\[1\].x: must lie in \[-5.0, 5.0\] \(got 9.0\)"),
        ({"points": [{"x": 1.0}]}, r"phase\[1\].points\[1\]: missing a value for parameter 'lr'"),
    ])
    def test_bad_points(self, options, message):
        with pytest.raises(ConfigError, match=message):
            ExplicitStrategy.parse_options(options, SPACE, "phase[1]")


class TestGrid(SizedContract):
    cls = GridStrategy
    options = {"steps": 3}
    n = 10_000

    def test_every_combination_once(self):
        points = self.points()
        # x: 3, lr: 3, units: 3 (log-spaced, rounded), act: 3 choices, bs: fixed.
        assert len(points) == 81
        assert len({tuple(p.values()) for p in points}) == 81
        assert sorted({p["x"] for p in points}) == [-5.0, 0.0, 5.0]
        assert sorted({p["lr"] for p in points}) == pytest.approx([1e-5, 1e-3, 1e-1])
        assert sorted({p["units"] for p in points}) == [16, 91, 512]

    def test_steps_per_parameter(self):
        space = parse_space({"x": {"type": "float", "low": 0.0, "high": 1.0},
                             "n": {"type": "int", "low": 1, "high": 4},
                             "c": {"type": "categorical", "choices": [True, False]}})
        strategy = make(GridStrategy, {"steps": {"x": 5}}, space=space)
        points = list(iter(strategy.ask, None))
        assert len(points) == 5 * 4 * 2  # ints without steps: every integer
        assert sorted({p["x"] for p in points}) == [0.0, 0.25, 0.5, 0.75, 1.0]

    @pytest.mark.parametrize("options, message", [
        ({}, "phase\\[1\\].steps: float parameter 'x' needs 'steps' for a grid"),
        ({"steps": {"x": 2}}, "float parameter 'lr' needs 'steps'"),
        ({"steps": 0}, "phase\\[1\\].steps: must be >= 1 \\(got 0\\)"),
        ({"steps": {"nope": 2}}, "phase\\[1\\].steps.nope: not a parameter of the space"),
        ({"steps": 1000}, "the grid has .* points .* lower 'steps' or use strategy 'random'"),
    ])
    def test_bad_steps(self, options, message):
        with pytest.raises(ConfigError, match=message):
            GridStrategy.parse_options(options, SPACE, "phase[1]")


class TestSobol(StrategyContract):
    cls = SobolStrategy
    n = 256

    def test_fills_the_space_more_evenly_than_random(self):
        def gaps(points):  # largest empty interval of x in [-5, 5]
            xs = np.sort([-5.0] + [p["x"] for p in points] + [5.0])
            return np.diff(xs).max()

        sobol = self.points(seed=1, n=64)
        random = make(RandomStrategy, {}, seed=1)
        assert gaps(sobol) < gaps([random.ask() for _ in range(64)])
        assert gaps(sobol) < 0.5  # 64 points leave no gap wider than a 20th of the range


class TestBayes(StrategyContract):
    cls = BayesStrategy
    n = 15

    def test_master_never_asks(self):
        with pytest.raises(RuntimeError, match="chosen by the worker"):
            make(BayesStrategy, {}).ask()

    def test_beats_random_search_on_the_same_budget(self):
        bayes = min(loss(p) for p in self.points(seed=2, n=25))
        random = make(RandomStrategy, {}, seed=2)
        assert bayes < min(loss(random.ask()) for _ in range(25))

    @pytest.mark.parametrize("options, message", [
        ({"acquisition": "ts"}, r"phase\[1\].acquisition: unknown acquisition \(allowed: ei, ucb, pi\) \(got 'ts'\)"),
        ({"xi": -0.1}, r"phase\[1\].xi: must be >= 0 \(got -0.1\)"),
        ({"kappa": 0}, r"phase\[1\].kappa: must be > 0 \(got 0\)"),
        ({"kappa": "big"}, r"phase\[1\].kappa: must be a number \(got 'big'\)"),
        ({"sequential": "yes"}, r"phase\[1\].sequential: must be true, false or \"auto\" \(got 'yes'\)"),
        ({"lookahead": 1}, r"phase\[1\].lookahead: must be true or false \(got 1\)"),
    ])
    def test_bad_options(self, options, message):
        with pytest.raises(ConfigError, match=message):
            BayesStrategy.parse_options(options, SPACE, "phase[1]")

    def test_needs_something_to_search(self):
        fixed = parse_space({"a": {"type": "fixed", "value": 1}, "b": {"type": "fixed", "value": "x"}})
        with pytest.raises(ConfigError, match=r"phase\[1\].strategy: 'bayes' needs at least one parameter to search "
                                              r"\(the space has only fixed parameters: a, b\)"):
            BayesStrategy.parse_options({}, fixed, "phase[1]")


class TestRandom(StrategyContract):
    cls = RandomStrategy
    n = 600

    def test_sized_by_trials(self):
        assert self.cls.sized_by_trials
        assert self.cls.fixed_size({}, SPACE) is None
        assert len(self.points(n=1000)) == 1000  # never runs dry

    def test_spread_over_the_space(self):
        points = self.points()
        assert len({p["x"] for p in points}) == len(points)
        assert {p["act"] for p in points} == {"relu", "tanh", "elu"}
        lrs = np.log10([p["lr"] for p in points])
        assert lrs.min() < -4.5 and lrs.max() > -1.5  # log-uniform reaches both decades

    def test_different_seeds_differ(self):
        assert self.points(seed=1) != self.points(seed=2)

    def test_discrete_space_no_repeats_until_exhausted(self):
        space = parse_space({"a": {"type": "int", "low": 1, "high": 4},
                             "b": {"type": "categorical", "choices": ["p", "q", "r"]}})
        strategy = make(RandomStrategy, {}, space=space)
        first = [strategy.ask() for _ in range(12)]
        assert len({(p["a"], p["b"]) for p in first}) == 12  # all 12 points, none twice
        assert strategy.ask() in first  # then it starts over
