"""Search strategies. Every strategy passes the same contract; each has its own tests too."""

from __future__ import annotations

import numpy as np
import pytest

from hpc_hpo.errors import ConfigError
from hpc_hpo.space import parse_space
from hpc_hpo.strategies import STRATEGIES, ExplicitStrategy, GridStrategy, RandomStrategy

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


class StrategyContract:
    """What every strategy promises: valid points of the space, reproducible from the seed."""

    cls = None
    options: dict = {}
    n = 20

    def points(self, seed=0, n=None):
        strategy = make(self.cls, self.options, seed)
        out = []
        for _ in range(n or self.n):
            point = strategy.ask()
            if point is None:
                break
            out.append(point)
            strategy.tell(point, 1.0)
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
