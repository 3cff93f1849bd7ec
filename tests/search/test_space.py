"""The search space: parsing and validation, the unit-cube map, sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpc_hpo.errors import ConfigError
from hpc_hpo.search.space import CategoricalParam, FixedParam, FloatParam, IntParam, parse_space

FULL = {
    "x": {"type": "float", "low": -5.0, "high": 5.0},
    "lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
    "units": {"type": "int", "low": 16, "high": 512, "log": True},
    "layers": {"type": "int", "low": 1, "high": 4},
    "act": {"type": "categorical", "choices": ["relu", "tanh", "elu"]},
    "bs": {"type": "fixed", "value": 64},
}


def test_parse_every_type():
    space = parse_space(FULL)
    assert space.names == ("x", "lr", "units", "layers", "act", "bs")
    assert space["lr"] == FloatParam("lr", 1e-5, 1e-1, log=True)
    assert space["units"] == IntParam("units", 16, 512, log=True)
    assert space["act"] == CategoricalParam("act", ("relu", "tanh", "elu"))
    assert space["bs"] == FixedParam("bs", 64)
    assert space.dim == 5  # the fixed parameter is not searched
    assert space.fixed == {"bs": 64}


@pytest.mark.parametrize("spec, message", [
    ({"type": "float", "low": 0.1, "high": 0.01}, "space.p: 'low' must be < 'high' (got low=0.1, high=0.01)"),
    ({"type": "float", "low": 1.0, "high": 1.0}, "'low' must be < 'high'"),
    ({"type": "int", "low": 5, "high": 2}, "space.p: 'low' must be < 'high' (got low=5, high=2)"),
    ({"type": "float", "low": 0.0, "high": 1.0, "log": True}, "space.p: 'log = true' needs 'low' > 0 (got low=0.0)"),
    ({"type": "int", "low": -3, "high": 10, "log": True}, "'log = true' needs 'low' > 0 (got low=-3)"),
    ({"type": "categorical", "choices": []}, "space.p.choices: must not be empty (got [])"),
    ({"type": "categorical", "choices": "relu"}, "space.p.choices: must be a list"),
    ({"type": "categorical", "choices": ["a", 1]}, "choices must all be strings, all numbers or all booleans"),
    ({"type": "categorical", "choices": ["a", "a"]}, "choices must be distinct ('a' appears twice)"),
    ({"type": "gaussian", "low": 0, "high": 1}, "space.p.type: unknown parameter type (allowed: float, int, categorical, fixed) (got 'gaussian')"),
    ({"low": 0, "high": 1}, "space.p.type: is required"),
    ({"type": "float", "low": 0.0, "high": 1.0, "step": 0.1}, "space.p.step: unknown key for a float parameter"),
    ({"type": "int", "low": 1.5, "high": 4}, "space.p.low: must be an integer (got 1.5)"),
    ({"type": "float", "low": "0", "high": 1.0}, "space.p.low: must be a finite number (got '0')"),
    ({"type": "float", "high": 1.0}, "space.p.low: is required"),
    ({"type": "float", "low": 0.0, "high": 1.0, "log": "yes"}, "space.p.log: must be true or false"),
    ({"type": "fixed"}, "space.p.value: is required"),
    ([1, 2], "space.p: must be a table"),
])
def test_bad_parameters_name_field_rule_and_value(spec, message):
    with pytest.raises(ConfigError) as info:
        parse_space({"p": spec})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_empty_space_and_bad_names():
    with pytest.raises(ConfigError, match="at least one parameter"):
        parse_space({})
    with pytest.raises(ConfigError, match="parameter name must start with a letter"):
        parse_space({"1x": {"type": "fixed", "value": 1}})


def test_mixed_int_float_choices_become_floats():
    space = parse_space({"c": {"type": "categorical", "choices": [1, 2.5]}})
    assert space["c"].choices == (1.0, 2.5)
    assert space["c"].check(1, "w") == 1.0


def test_int_round_trip_is_exact_for_every_value():
    for param in (IntParam("a", 16, 512, log=True), IntParam("b", -7, 9), IntParam("c", 1, 2, log=True)):
        values = list(range(param.low, param.high + 1))
        assert param.from_unit(param.to_unit(values)) == values


def test_int_bins_cover_the_cube_and_map_into_bounds():
    param = IntParam("units", 16, 512, log=True)
    values = param.from_unit(np.linspace(0, 1, 10001))
    assert min(values) == 16 and max(values) == 512
    assert all(isinstance(v, int) for v in values)
    # Log-uniform: about as many draws in [16, 64] as in [128, 512].
    rng = np.random.default_rng(0)
    draws = np.array(param.from_unit(rng.random(20000)))
    low, high = np.mean(draws <= 64), np.mean(draws >= 128)
    assert abs(low - high) < 0.03


def test_float_log_and_linear_round_trip():
    for param in (FloatParam("lr", 1e-5, 1e-1, log=True), FloatParam("x", -5.0, 5.0)):
        values = [param.low, param.high, (param.low + param.high) / 2]
        assert np.allclose(param.from_unit(param.to_unit(values)), values, rtol=1e-12)
    lr = FloatParam("lr", 1e-5, 1e-1, log=True)
    assert math.isclose(lr.from_unit(np.array([0.5]))[0], 1e-3, rel_tol=1e-9)


def test_sample_gives_native_types_inside_bounds():
    space = parse_space(FULL)
    points = space.sample(np.random.default_rng(3), 500)
    assert len(points) == 500
    for p in points:
        assert set(p) == set(space.names)
        assert type(p["x"]) is float and -5 <= p["x"] <= 5
        assert type(p["lr"]) is float and 1e-5 <= p["lr"] <= 1e-1
        assert type(p["units"]) is int and 16 <= p["units"] <= 512
        assert type(p["layers"]) is int and 1 <= p["layers"] <= 4
        assert p["act"] in ("relu", "tanh", "elu")
        assert p["bs"] == 64
    assert {p["act"] for p in points} == {"relu", "tanh", "elu"}
    assert {p["layers"] for p in points} == {1, 2, 3, 4}


def test_to_unit_and_back_reproduces_points():
    space = parse_space(FULL)
    points = space.sample(np.random.default_rng(4), 50)
    again = space.from_unit(space.to_unit(points))
    for a, b in zip(points, again, strict=True):
        assert a["units"] == b["units"] and a["act"] == b["act"] and a["layers"] == b["layers"]
        assert math.isclose(a["lr"], b["lr"], rel_tol=1e-9) and math.isclose(a["x"], b["x"], abs_tol=1e-12)


def test_check_point():
    space = parse_space(FULL)
    point = space.check_point({"x": 0, "lr": 1e-3, "units": 64, "layers": 2, "act": "relu"}, "w")
    assert point == {"x": 0.0, "lr": 1e-3, "units": 64, "layers": 2, "act": "relu", "bs": 64}
    assert type(point["x"]) is float
    with pytest.raises(ConfigError, match=r"w.lr: must lie in \[1e-05, 0.1\] \(got 0.5\)"):
        space.check_point({"x": 0, "lr": 0.5, "units": 64, "layers": 2, "act": "relu"}, "w")
    with pytest.raises(ConfigError, match="w: missing a value for parameter 'act'"):
        space.check_point({"x": 0, "lr": 1e-3, "units": 64, "layers": 2}, "w")
    with pytest.raises(ConfigError, match="w.zz: not a parameter of the space"):
        space.check_point({"zz": 1}, "w")
    with pytest.raises(ConfigError, match="w.units: must be an integer for int parameter 'units' \\(got 64.5\\)"):
        space.check_point({"x": 0, "lr": 1e-3, "units": 64.5, "layers": 2, "act": "relu"}, "w")
    with pytest.raises(ConfigError, match="w.act: must be one of"):
        space.check_point({"x": 0, "lr": 1e-3, "units": 64, "layers": 2, "act": "gelu"}, "w")
    with pytest.raises(ConfigError, match="w.bs: 'bs' is fixed to 64 \\(got 32\\)"):
        space.check_point({"x": 0, "lr": 1e-3, "units": 64, "layers": 2, "act": "relu", "bs": 32}, "w")


def test_cardinality():
    assert parse_space(FULL).cardinality is None
    discrete = parse_space({"a": {"type": "int", "low": 1, "high": 3}, "b": {"type": "categorical", "choices": [True, False]}})
    assert discrete.cardinality == 6
