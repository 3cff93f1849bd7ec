"""Which parameters matter: a random forest fitted to the successful trials, and its impurity importances.

Features are the parameters as the search space sees them (log parameters in log space, a
categorical as the index of its choice, which trees split as well as one-hot columns); the
target is the value (its logarithm when it is positive and spans more than a factor 100). The
bars are the mean importance over the trees, the whiskers their standard deviation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from .common import figure, wants_log
from .data import TrialTable

#: Fewest successful trials with known parameters for which importances mean anything.
MIN_TRIALS = 5


@dataclass(frozen=True)
class Importance:
    name: str
    mean: float  # share of the forest's impurity decrease; the shares add up to 1
    std: float


def importances(table: TrialTable, seed: int = 0) -> list[Importance]:
    """Importances of the searched parameters, most important first; empty when there are too few trials."""
    mask = table.done & table.has_point()
    if mask.sum() < MIN_TRIALS or not table.axes:
        return []
    from sklearn.ensemble import RandomForestRegressor

    features = np.column_stack([table.unit(axis)[mask] for axis in table.axes])
    y = table.value[mask]
    if wants_log(y):
        y = np.log(y)
    if np.ptp(y) == 0:
        return [Importance(axis.name, 0.0, 0.0) for axis in table.axes]
    forest = RandomForestRegressor(n_estimators=128, min_samples_leaf=2, random_state=seed, n_jobs=1).fit(features, y)
    per_tree = np.array([tree.feature_importances_ for tree in forest.estimators_])
    result = [Importance(axis.name, float(forest.feature_importances_[i]), float(per_tree[:, i].std()))
              for i, axis in enumerate(table.axes)]
    return sorted(result, key=lambda imp: -imp.mean)


def importance_figure(table: TrialTable, result: list[Importance]) -> Figure:
    fig = figure(7, max(2.6, 0.9 + 0.45 * len(result)))
    ax = fig.add_subplot()
    names = [imp.name for imp in result][::-1]
    means = [imp.mean for imp in result][::-1]
    stds = [imp.std for imp in result][::-1]
    ax.barh(names, means, xerr=stds, color="#4c72b0", ecolor="#333333", capsize=3)
    for y, (mean, std) in enumerate(zip(means, stds, strict=True)):
        ax.text(mean + std, y, f"  {mean:.2f}", va="center", ha="left", fontsize=8)
    ax.set_xlim(0, max(1e-9, max(m + s for m, s in zip(means, stds, strict=True))) * 1.2)
    ax.set_xlabel("importance (random forest, share of impurity decrease)")
    ax.set_title(f"parameter importance from {int((table.done & table.has_point()).sum())} successful trials")
    ax.grid(axis="x", alpha=0.3)
    return fig
