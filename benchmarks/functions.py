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


def ackley(params):
    """Ackley in 5-D on [-32.768, 32.768]^5: a deep narrow funnel at the origin in a field of ripples."""
    _nap(params)
    x = np.array([params[f"x{i}"] for i in range(5)])
    return float(-20.0 * math.exp(-0.2 * math.sqrt(np.mean(x * x))) - math.exp(np.mean(np.cos(2 * math.pi * x)))
                 + 20.0 + math.e)


def rosenbrock(params):
    """Rosenbrock in 4-D on [-5, 10]^4: a long curved valley, minimum 0 at (1, 1, 1, 1)."""
    _nap(params)
    x = np.array([params[f"x{i}"] for i in range(4)])
    return float(np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2))


def michalewicz(params):
    """Michalewicz in 5-D on [0, pi]^5 (m = 10): steep narrow valleys, minimum -4.687658."""
    _nap(params)
    x = np.array([params[f"x{i}"] for i in range(5)])
    i = np.arange(1, 6)
    return float(-np.sum(np.sin(x) * np.sin(i * x * x / math.pi) ** 20))


# --- machine-learning tasks on scikit-learn's bundled data sets (Bayesmark's style) --------------------
# The objective is the 3-fold cross-validated error (1 - accuracy); the minimum is unknown, so these
# problems are compared by the best error reached and by rank, not by regret.

_DATA: dict = {}


def _data(name):
    if name not in _DATA:
        from sklearn import datasets
        from sklearn.preprocessing import StandardScaler

        X, y = {"digits": datasets.load_digits, "breast_cancer": datasets.load_breast_cancer,
                "wine": datasets.load_wine}[name](return_X_y=True)
        _DATA[name] = (StandardScaler().fit_transform(X), y)
    return _DATA[name]


def _cv_error(model, data_name):
    import warnings

    from sklearn.model_selection import StratifiedKFold, cross_val_score

    X, y = _data(data_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an MLP that has not converged is a legitimate (bad) trial
        scores = cross_val_score(model, X, y, cv=StratifiedKFold(3, shuffle=True, random_state=0))
    return float(1.0 - scores.mean())


def svm_digits(params):
    """An RBF/polynomial SVM on the digits: C, gamma (log) and the kernel."""
    from sklearn.svm import SVC

    _nap(params)
    return _cv_error(SVC(C=params["C"], gamma=params["gamma"], kernel=params["kernel"], degree=3), "digits")


def gbm_breast_cancer(params):
    """Gradient-boosted trees on the breast-cancer data: five parameters, two of them integers."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    _nap(params)
    model = HistGradientBoostingClassifier(
        learning_rate=params["learning_rate"], max_depth=params["max_depth"], max_leaf_nodes=params["max_leaf_nodes"],
        min_samples_leaf=params["min_samples_leaf"], l2_regularization=params["l2_regularization"], max_iter=50,
        random_state=0)
    return _cv_error(model, "breast_cancer")


def mlp_wine(params):
    """A small MLP on the wine data: width (log int), L2, learning rate (log) and activation."""
    from sklearn.neural_network import MLPClassifier

    _nap(params)
    model = MLPClassifier(hidden_layer_sizes=(params["units"],), alpha=params["alpha"],
                          learning_rate_init=params["lr"], activation=params["activation"], max_iter=100,
                          random_state=0)
    return _cv_error(model, "wine")


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
    "ackley5": {"function": ackley, "minimum": 0.0,
                "space": {f"x{i}": {"type": "float", "low": -32.768, "high": 32.768} for i in range(5)}},
    "rosenbrock4": {"function": rosenbrock, "minimum": 0.0,
                    "space": {f"x{i}": {"type": "float", "low": -5.0, "high": 10.0} for i in range(4)}},
    "michalewicz5": {"function": michalewicz, "minimum": -4.687658,
                     "space": {f"x{i}": {"type": "float", "low": 0.0, "high": math.pi} for i in range(5)}},
    "svm_digits": {"function": svm_digits, "minimum": None,
                   "space": {"C": {"type": "float", "low": 1e-3, "high": 1e3, "log": True},
                             "gamma": {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
                             "kernel": {"type": "categorical", "choices": ["rbf", "poly", "sigmoid"]}}},
    "gbm_breast_cancer": {"function": gbm_breast_cancer, "minimum": None,
                          "space": {"learning_rate": {"type": "float", "low": 1e-3, "high": 1.0, "log": True},
                                    "max_depth": {"type": "int", "low": 2, "high": 12},
                                    "max_leaf_nodes": {"type": "int", "low": 4, "high": 128, "log": True},
                                    "min_samples_leaf": {"type": "int", "low": 1, "high": 64, "log": True},
                                    "l2_regularization": {"type": "float", "low": 1e-6, "high": 10.0, "log": True}}},
    "mlp_wine": {"function": mlp_wine, "minimum": None,
                 "space": {"units": {"type": "int", "low": 4, "high": 256, "log": True},
                           "alpha": {"type": "float", "low": 1e-6, "high": 1.0, "log": True},
                           "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
                           "activation": {"type": "categorical", "choices": ["relu", "tanh", "logistic"]}}},
}
