"""Which parameters matter: fANOVA over a random forest fitted to the successful trials.

A random forest (scikit-learn, 128 trees) is fitted to the value (its logarithm when it is
positive and spans more than a factor 100) over the parameters as the search space sees them
(on [0, 1], log parameters in log space, a categorical's choices as equal slices). Each tree
cuts the space into boxes; under a uniform measure over the space, a parameter's importance
is the share of the tree's variance that its marginal alone explains (the first-order term of
the functional ANOVA, Hutter, Hoos & Leyton-Brown, ICML 2014). The shares do not add up to 1:
the rest is what parameters do together. Bars are the mean over the trees, whiskers the spread.
This ranks parameters by what they do to the value, where impurity importance also rewards a
parameter that the trees merely have many places to cut.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from .common import figure, wants_log
from .data import TrialTable

#: Fewest successful trials with known parameters for which importances mean anything.
MIN_TRIALS = 5
TREES = 128
MAX_SAMPLES_PER_TREE = 4000


@dataclass(frozen=True)
class Importance:
    name: str
    mean: float  # share of the value's variance this parameter explains alone (mean over the trees)
    std: float  # its spread over the trees


def importances(table: TrialTable, seed: int = 0) -> list[Importance]:
    """Importances of the searched parameters, most important first; empty when there are too few trials."""
    mask = table.done & table.has_point()
    if mask.sum() < MIN_TRIALS or not table.axes:
        return []
    from sklearn.ensemble import RandomForestRegressor

    features = np.column_stack([_unit_measure(table, axis)[mask] for axis in table.axes])
    y = table.value[mask]
    if wants_log(y):
        y = np.log(y)
    if np.ptp(y) == 0:
        return [Importance(axis.name, 0.0, 0.0) for axis in table.axes]
    # Past MAX_SAMPLES_PER_TREE trials each tree learns from a bootstrap sample of that many: the shares
    # barely move, and 20,000 trials take 2.6 s instead of 12.
    per_tree = MAX_SAMPLES_PER_TREE if len(y) > MAX_SAMPLES_PER_TREE else None
    forest = RandomForestRegressor(n_estimators=TREES, min_samples_leaf=2, max_samples=per_tree, random_state=seed,
                                   n_jobs=1).fit(features, y)
    shares = np.array([first_order_shares(tree.tree_, len(table.axes)) for tree in forest.estimators_])
    result = [Importance(axis.name, float(shares[:, i].mean()), float(shares[:, i].std()))
              for i, axis in enumerate(table.axes)]
    return sorted(result, key=lambda imp: -imp.mean)


def _unit_measure(table: TrialTable, axis) -> np.ndarray:
    """The parameter on [0, 1] where the uniform measure is the search space's: a categorical's
    n choices at the middles of n equal slices (trees cut between them, at the slice borders)."""
    if axis.categorical:
        return (table.numeric(axis) + 0.5) / len(axis.choices)
    return table.unit(axis)


def leaf_boxes(tree, dims: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The leaves of a fitted sklearn tree as boxes of [0, 1]^dims: (lower, upper, value).

    Level by level from the root, all nodes of a level at once: a child starts from its
    parent's box and the parent's cut bounds one side (x <= cut goes left)."""
    lower = np.zeros((tree.node_count, dims))
    upper = np.ones((tree.node_count, dims))
    left, right, feature, threshold = tree.children_left, tree.children_right, tree.feature, tree.threshold
    level = np.array([0])
    while level.size:
        level = level[left[level] >= 0]  # the split nodes of this level
        f = feature[level]
        cut = np.clip(threshold[level], lower[level, f], upper[level, f])
        for children, bound in ((left[level], upper), (right[level], lower)):
            lower[children], upper[children] = lower[level], upper[level]
            bound[children, f] = cut
        level = np.concatenate([left[level], right[level]])
    leaves = left < 0
    return lower[leaves], upper[leaves], tree.value[leaves, 0, 0]


def first_order_shares(tree, dims: int) -> np.ndarray:
    """For each feature, the share of the tree's variance over [0, 1]^dims that its marginal explains."""
    lower, upper, value = leaf_boxes(tree, dims)
    widths = upper - lower
    volume = widths.prod(axis=1)
    mean = float(volume @ value)
    variance = float(volume @ (value - mean) ** 2)
    shares = np.zeros(dims)
    if variance <= 1e-12 * max(1.0, mean * mean):
        return shares
    for j in range(dims):
        keep = widths[:, j] > 0
        # The marginal f_j(x) = sum over the leaves whose box spans x of value * (volume of the
        # box's other sides): piecewise constant between the tree's cuts on j, summed with a
        # difference array over the sorted cut points.
        weight = value[keep] * volume[keep] / widths[keep, j]
        points = np.unique(np.concatenate([lower[keep, j], upper[keep, j]]))
        step = np.zeros(len(points))
        np.add.at(step, np.searchsorted(points, lower[keep, j]), weight)
        np.add.at(step, np.searchsorted(points, upper[keep, j]), -weight)
        marginal = np.cumsum(step)[:-1]
        shares[j] = float(np.diff(points) @ (marginal - mean) ** 2) / variance
    return shares


def interaction_share(ranking: list[Importance]) -> float:
    """What the parameters explain only together: the variance no single marginal accounts for."""
    return max(0.0, 1.0 - sum(imp.mean for imp in ranking))


def importance_figure(table: TrialTable, result: list[Importance]) -> Figure:
    fig = figure(7, max(2.6, 1.2 + 0.45 * len(result)))
    ax = fig.add_subplot()
    names = ["(together)"] + [imp.name for imp in result][::-1]
    means = [interaction_share(result)] + [imp.mean for imp in result][::-1]
    stds = [0.0] + [imp.std for imp in result][::-1]
    colours = ["#b0b0b0"] + ["#4c72b0"] * len(result)
    ax.barh(names, means, xerr=[0.0] + stds[1:], color=colours, ecolor="#333333", capsize=3)
    for y, (mean, std) in enumerate(zip(means, stds, strict=True)):
        ax.text(mean + std, y, f"  {mean:.2f}", va="center", ha="left", fontsize=8)
    ax.set_xlim(0, min(1.15, max(0.05, max(m + s for m, s in zip(means, stds, strict=True)) * 1.2)))
    target = "log(value)" if wants_log(table.value[table.done & table.has_point()]) else "the value"
    ax.set_xlabel(f"share of the variance of {target} explained alone (fANOVA over a random forest)")
    ax.set_title(f"parameter importance from {int((table.done & table.has_point()).sum())} successful trials")
    ax.get_yticklabels()[0].set_color("#666666")
    ax.grid(axis="x", alpha=0.3)
    return fig
