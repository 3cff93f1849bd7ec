"""The 2-D Griewank function with a log-scaled, an integer and a categorical knob added,
so the example shows every parameter type. The minimum is 0 at x = y = 0."""

import math


def objective(params, trial):
    x, y = params["x"], params["y"]
    value = 1.0 + (x * x + y * y) / 4000.0 - math.cos(x) * math.cos(y / math.sqrt(2.0))
    # The extra knobs nudge the value a little, like hyperparameters of a real model would.
    penalty = 0.01 * abs(math.log10(params["lr"]) + 3) + 0.001 * abs(params["units"] - 64) / 64
    penalty += {"relu": 0.0, "tanh": 0.005, "elu": 0.002}[params["act"]]
    return {"value": value + penalty, "penalty": penalty, "rank": trial.rank}
