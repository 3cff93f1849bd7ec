"""Test functions for the Bayesian benchmarks, each with its space and its known minimum.

Every objective accepts an optional ``sleep`` parameter (seconds), so that workers under
mpirun overlap as they would with real training runs.
"""

from __future__ import annotations

import math
import time

import numpy as np

_H6_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
                  [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
_H6_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                         [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]])
_H6_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def _nap(params):
    time.sleep(params.get("sleep", 0.0))


def branin(params):
    _nap(params)
    x1, x2 = params["x1"], params["x2"]
    return ((x2 - 5.1 / (4 * math.pi**2) * x1**2 + 5 / math.pi * x1 - 6) ** 2
            + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x1) + 10)


def hartmann6(params):
    _nap(params)
    x = np.array([params[f"x{i}"] for i in range(6)])
    return float(-np.sum(_H6_ALPHA * np.exp(-np.sum(_H6_A * (x - _H6_P) ** 2, axis=1))))


def griewank(params):
    _nap(params)
    x, y = params["x"], params["y"]
    return 1.0 + (x * x + y * y) / 4000.0 - math.cos(x) * math.cos(y / math.sqrt(2.0))


_ACT = {"relu": 0.0, "tanh": 0.3, "elu": 0.1, "gelu": 0.05}


def mixed(params):
    """A stand-in for a training loss over a log-float, a log-int, an int, a categorical and a float.

    Minimum 0 at lr = 10^-2.5, units = 128, layers = 3, act = relu, dropout = 0.2, with an
    interaction between learning rate and depth.
    """
    _nap(params)
    lr = math.log10(params["lr"]) + 2.5
    units = math.log2(params["units"]) - 7.0
    layers = params["layers"] - 3
    return (lr**2 + 0.25 * units**2 + 0.2 * layers**2 + 0.3 * lr * layers + 4 * (params["dropout"] - 0.2) ** 2
            + _ACT[params["act"]])


PROBLEMS = {
    "branin": {"function": branin, "minimum": 0.397887357729738,
               "space": {"x1": {"type": "float", "low": -5.0, "high": 10.0},
                         "x2": {"type": "float", "low": 0.0, "high": 15.0}}},
    "hartmann6": {"function": hartmann6, "minimum": -3.32236801141551,
                  "space": {f"x{i}": {"type": "float", "low": 0.0, "high": 1.0} for i in range(6)}},
    "griewank": {"function": griewank, "minimum": 0.0,
                 "space": {"x": {"type": "float", "low": -5.0, "high": 5.0},
                           "y": {"type": "float", "low": -5.0, "high": 5.0}}},
    "mixed": {"function": mixed, "minimum": 0.0,
              "space": {"lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
                        "units": {"type": "int", "low": 16, "high": 1024, "log": True},
                        "layers": {"type": "int", "low": 1, "high": 6},
                        "act": {"type": "categorical", "choices": ["relu", "tanh", "elu", "gelu"]},
                        "dropout": {"type": "float", "low": 0.0, "high": 0.5}}},
}
