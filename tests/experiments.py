"""Experiments the end-to-end tests run: every parameter type, failures, metrics."""

OBJECTIVE = """
import math
import time


def objective(params, trial):
    if params["x"] > 4.0:
        raise ValueError("x too large: %.3f" % params["x"])
    if params["act"] == "nan":
        return float("nan")
    time.sleep(params["sleep"])
    value = (params["x"] - 1.0) ** 2 + math.log10(params["lr"]) ** 2 / 100 + params["units"] / 1000
    return {"value": value, "rank": trial.rank, "trial": trial.trial_id}
"""


def experiment(results="results.h5", trials=20, sleep=0.0, seed=1, direction="minimize", extra_phases=True):
    phases = """
[[phase]]
strategy = "explicit"
points = [ { x = 4.5, lr = 1e-3, units = 64, act = "relu" }, { x = 1.0, lr = 1e-3, units = 16, act = "tanh" } ]

[[phase]]
strategy = "grid"
steps = { x = 2, lr = 2, units = 2 }
""" if extra_phases else ""
    return header("e2e", results, sleep, seed, direction) + f"""{phases}
[[phase]]
strategy = "random"
trials = {trials}
"""


def header(name="e2e", results="results.h5", sleep=0.0, seed=1, direction="minimize"):
    """[experiment] and [space] over every parameter type, for OBJECTIVE; phases follow."""
    return f"""
[experiment]
name = "{name}"
objective = "objective.py:objective"
direction = "{direction}"
results = "{results}"
seed = {seed}

[space]
x     = {{ type = "float", low = -5.0, high = 5.0 }}
lr    = {{ type = "float", low = 1e-5, high = 1e-1, log = true }}
units = {{ type = "int", low = 16, high = 512, log = true }}
act   = {{ type = "categorical", choices = ["relu", "tanh", "nan"] }}
sleep = {{ type = "fixed", value = {sleep} }}
"""


def bayes_experiment(trials=12, sleep=0.0, seed=1, extra=""):
    """8 Sobol points, then ``trials`` Bayesian ones; ``extra`` lines go into the bayes phase."""
    return header("bayes", sleep=sleep, seed=seed) + f"""
[[phase]]
strategy = "sobol"
trials = 8

[[phase]]
strategy = "bayes"
trials = {trials}
{extra}
"""


REPORTING_OBJECTIVE = OBJECTIVE + '''

def reporting(params, trial):
    """OBJECTIVE after a learning curve of five epochs, reported as the Keras callback does."""
    for epoch in range(5):
        trial.report(epoch, {"loss": 1.0 / (epoch + 1) + params["units"] / 1000, "val_loss": 1.2 / (epoch + 1)})
    return objective(params, trial)
'''


def reporting(body):
    """An experiment made for OBJECTIVE, run with REPORTING_OBJECTIVE's ``reporting`` instead."""
    return body.replace("objective.py:objective", "objective.py:reporting")
