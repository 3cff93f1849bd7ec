"""Two parameters against each other, coloured by value, with an interpolated contour (PHS ``plot_3d``).

Each point is labelled with its trial id (the best first, none over another), Bayesian
points are stars, the best point is circled, failed trials are grey crosses. The contour is
an interpolation of the successful values over the two axes (log axes in log space; linear
between the points when they are few, a smoothed local mean when they are many), drawn only
when both parameters are numbers and the points span an area.
"""

from __future__ import annotations

import itertools

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ...errors import ConfigError
from .common import BEST_COLOUR, better_last, direction_word, figure, jitter, marker_size, param_axis, value_colorbar, value_scale
from .data import Axis, TrialTable

#: Most trial ids written beside points (the best ones first).
MAX_LABELS = 40
#: Cells of the contour grid along each axis.
GRID = 100
#: From this many successful trials on, the contour is a smoothed local mean instead of a linear interpolation.
SMOOTH_FROM = 100


#: With more searched parameters than this, the default pairs are those of the most important ones.
MAX_PARAMETERS_PAIRED = 6


def choose_pairs(table: TrialTable, names: list[tuple[str, str]] | None, ranked: list[str] | None = None,
                 every: bool = False) -> tuple[list[tuple[Axis, Axis]], str]:
    """The pairs to plot, and a note when some were left out.

    ``names``: the pairs the user named (``--pairs lr:units``), checked against the space;
    ``every``: every pair (``--pairs all``). By default every pair of up to MAX_PARAMETERS_PAIRED
    parameters; with more (45 plots at 10), the pairs of the MAX_PARAMETERS_PAIRED most
    important (``ranked``, most important first; the others follow in the space's order), or of
    the first ones before importance is known.
    """
    by_name = {axis.name: axis for axis in table.axes}
    if not names:
        if every or len(table.axes) <= MAX_PARAMETERS_PAIRED:
            return list(itertools.combinations(table.axes, 2)), ""
        first = [by_name[name] for name in ranked or [] if name in by_name]  # then the others, in space order
        order = first + [axis for axis in table.axes if axis not in first]
        kept = sorted(order[:MAX_PARAMETERS_PAIRED], key=table.axes.index)
        which = f"{len(kept)} most important" if first else f"first {len(kept)}"
        return list(itertools.combinations(kept, 2)), (
            f"two-parameter plots: the pairs of the {which} of {len(table.axes)} parameters "
            f"({', '.join(axis.name for axis in kept)}); --pairs all draws every pair, --pairs A:B the ones named")
    pairs = []
    for a, b in names:
        for name in (a, b):
            if name not in by_name:
                known = ", ".join(by_name) or "none"
                raise ConfigError(f"--pairs: '{name}' is not a searched parameter of {table.path} "
                                  f"(its parameters: {known}) (got '{a}:{b}')")
        if a == b:
            raise ConfigError(f"--pairs: a pair needs two different parameters (got '{a}:{b}')")
        pairs.append((by_name[a], by_name[b]))
    return pairs, ""


def _contour(ax, table: TrialTable, ax_x: Axis, ax_y: Axis, cmap, norm) -> bool:
    """Filled contour of the value over the two axes; False when the points do not span an area."""
    if ax_x.categorical or ax_y.categorical:
        return False
    done = table.done & table.has_point()
    x, y = table.numeric(ax_x)[done], table.numeric(ax_y)[done]
    values = table.value[done]
    if len(values) < 4:
        return False
    tx = np.log(x) if ax_x.log else x
    ty = np.log(y) if ax_y.log else y
    if np.ptp(tx) == 0 or np.ptp(ty) == 0:
        return False
    log_values = isinstance(norm, LogNorm)
    z = np.log(values) if log_values else values
    edges_x, edges_y = np.linspace(tx.min(), tx.max(), GRID + 1), np.linspace(ty.min(), ty.max(), GRID + 1)
    grid = _interpolate(tx, ty, z, edges_x, edges_y)
    if grid is None:
        return False
    centres_x, centres_y = (edges_x[1:] + edges_x[:-1]) / 2, (edges_y[1:] + edges_y[:-1]) / 2
    gx, gy = np.meshgrid(centres_x, centres_y)
    if log_values:
        grid, levels = np.exp(grid), np.geomspace(norm.vmin, norm.vmax, 15)
    else:
        levels = np.linspace(norm.vmin, norm.vmax, 15)
    ax.contourf(np.exp(gx) if ax_x.log else gx, np.exp(gy) if ax_y.log else gy, grid, levels=levels, cmap=cmap,
                norm=norm, alpha=0.35, zorder=1, extend="both")
    return True


def _interpolate(x: np.ndarray, y: np.ndarray, z: np.ndarray, edges_x: np.ndarray, edges_y: np.ndarray):
    """The value on a grid (rows: y): linear between the points when they are few, as PHS draws it; a
    Gaussian-smoothed local mean when they are many, where a projection of a higher-dimensional search would
    make a linear interpolation a patchwork. NaN far from any point; None when there is nothing to draw."""
    if len(z) < SMOOTH_FROM:
        from scipy.interpolate import griddata
        from scipy.spatial import QhullError

        centres_x, centres_y = (edges_x[1:] + edges_x[:-1]) / 2, (edges_y[1:] + edges_y[:-1]) / 2
        gx, gy = np.meshgrid(centres_x, centres_y)
        try:
            grid = griddata(np.column_stack([x, y]), z, (gx, gy), method="linear")
        except (QhullError, ValueError):
            return None
    else:
        from scipy.ndimage import gaussian_filter

        sums, _, _ = np.histogram2d(y, x, bins=[edges_y, edges_x], weights=z)
        counts, _, _ = np.histogram2d(y, x, bins=[edges_y, edges_x])
        sigma = max(GRID / 14, GRID / np.sqrt(len(z)))  # about the spacing of the points
        weight = gaussian_filter(counts, sigma, mode="nearest")
        with np.errstate(invalid="ignore", divide="ignore"):
            grid = gaussian_filter(sums, sigma, mode="nearest") / weight
        grid[weight < 0.3 / (2 * np.pi * sigma**2)] = np.nan  # no trial within about 1.5 sigma
    return grid if np.isfinite(grid).any() else None


def pair_figure(table: TrialTable, ax_x: Axis, ax_y: Axis, contour: bool = True) -> Figure:
    fig = figure(7, 5.6)
    ax = fig.add_subplot()
    known = table.has_point()
    x = jitter(ax_x, table.numeric(ax_x), seed=1)
    y = jitter(ax_y, table.numeric(ax_y), seed=2)
    cmap, norm = value_scale(table)
    done = table.done & known
    n = int(known.sum())
    size = marker_size(n)
    drew_contour = contour and _contour(ax, table, ax_x, ax_y, cmap, norm)
    bayes = table.strategy == "bayes"
    scatter = None
    legend: list[tuple[str, dict]] = []
    for mask, marker, label in ((done & ~bayes, "o", "trial"), (done & bayes, "*", "Bayesian trial")):
        if mask.any():
            rows = better_last(table, mask)  # where points crowd, the good ones stay visible
            scatter = ax.scatter(x[rows], y[rows], c=table.value[rows], cmap=cmap, norm=norm, marker=marker,
                                 s=size * (2.2 if marker == "*" else 1), edgecolors="black",
                                 linewidths=0.4 if n < 300 else 0.1, zorder=3)
            legend.append((f"{label} ({mask.sum()})", {"marker": marker, "markerfacecolor": "#bbbbbb",
                                                       "markeredgecolor": "black", "markersize": 8}))
    failed = table.unsuccessful & known
    if failed.any():
        ax.scatter(x[failed], y[failed], marker="x", color="#7f7f7f", s=size * 0.8, linewidths=1, zorder=2)
        legend.append((f"failed ({failed.sum()})", {"marker": "x", "color": "#7f7f7f"}))
    running = table.running & known
    if running.any():
        ax.scatter(x[running], y[running], marker="o", facecolors="none", edgecolors="#1f77b4", s=size * 1.5,
                   linewidths=1.2, zorder=2)
        legend.append((f"running ({running.sum()})", {"marker": "o", "markerfacecolor": "none",
                                                      "markeredgecolor": "#1f77b4"}))
    best = table.best_index()
    if best is not None and known[best]:
        ax.scatter([x[best]], [y[best]], s=size * 7 + 80, facecolors="none", edgecolors=BEST_COLOUR, linewidths=2.2,
                   zorder=5, clip_on=False)
        legend.append((f"best (trial {table.trial_id[best]})", {"marker": "o", "markerfacecolor": "none",
                                                                "markeredgecolor": BEST_COLOUR, "markersize": 12,
                                                                "markeredgewidth": 2}))
    param_axis(ax, ax_x, "x")
    param_axis(ax, ax_y, "y")
    _label_points(ax, table, x, y, known)
    if scatter is not None:
        value_colorbar(fig, scatter, ax, table, label=f"value ({direction_word(table)})")
    title = f"{ax_y.name} against {ax_x.name}"
    if contour and not drew_contour and not (ax_x.categorical or ax_y.categorical):
        title += " (too few points for a contour)"
    ax.set_title(title)
    ax.grid(alpha=0.25)
    _legend(ax, legend)
    return fig


def _label_points(ax, table: TrialTable, x: np.ndarray, y: np.ndarray, known: np.ndarray) -> None:
    """Trial ids beside the points, the best first, skipping any that would cover a label already placed."""
    rows = np.flatnonzero(known)
    good = table.done[rows]
    done = rows[good]
    done = done[np.argsort(table.value[done] if table.minimize else -table.value[done], kind="stable")]
    candidates = list(done) + list(rows[~good])
    screen = ax.transData.transform(np.column_stack([x, y])[candidates]) if candidates else np.zeros((0, 2))
    placed: list[np.ndarray] = []
    most = MAX_LABELS if len(rows) <= 200 else MAX_LABELS // 2
    fontsize = 7 if len(rows) > 15 else 8
    for row, where in zip(candidates, screen, strict=True):
        if len(placed) >= most:
            break
        if any(abs(where[0] - p[0]) < 16 and abs(where[1] - p[1]) < 10 for p in placed):
            continue
        placed.append(where)
        ax.annotate(str(table.trial_id[row]), (x[row], y[row]), xytext=(3, 3), textcoords="offset points",
                    fontsize=fontsize, color="#333333", zorder=6)


def _legend(ax, entries: list[tuple[str, dict]]) -> None:
    """A legend of plain grey markers: the colours in the plot are values, not categories."""
    handles = [Line2D([], [], linestyle="none", label=label, **style) for label, style in entries]
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0, -0.12), ncol=3, fontsize=8, frameon=False)
