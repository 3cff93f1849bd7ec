"""Parameter combinations as parallel coordinates (PHS ``create_parameter_combination``).

One vertical axis per searched parameter, then the value; each trial is a line coloured by
its value, the best one drawn thick on top. Axes follow the space: log parameters in log
space with their values as ticks, categoricals with one tick per choice. Failed trials are
thin grey dashed lines that end at the "failed" mark below the value axis.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from .common import BEST_COLOUR, direction_word, figure, log_ticks, shorten, value_colorbar, value_scale
from .data import Axis, TrialTable

FAILED_POSITION = -0.08  # where failed trials end on the value axis, below its range


def _ticks(axis: Axis) -> list[tuple[float, str]]:
    """(position on [0, 1], label) for one parameter axis."""
    if axis.categorical:
        k = len(axis.choices)
        return [(i / max(1, k - 1), shorten(str(c), 12)) for i, c in enumerate(axis.choices)]
    if axis.log:
        return [(math.log(v / axis.low) / math.log(axis.high / axis.low), text) for v, text in log_ticks(axis)]
    values = np.linspace(axis.low, axis.high, 5)
    if axis.type == "int":
        values = np.unique(np.round(values))
    span = axis.high - axis.low or 1.0
    return [((v - axis.low) / span, f"{v:.4g}") for v in values]


def _value_unit(values: np.ndarray, norm) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """Values on [0, 1] along the colour scale's own (maybe log) axis, and the ticks of that axis."""
    unit = np.ma.filled(norm(values), np.nan).astype(float)
    spaced = np.geomspace if isinstance(norm, LogNorm) else np.linspace
    return unit, [(float(norm(v)), f"{v:.4g}") for v in spaced(norm.vmin, norm.vmax, 5)]


def parallel_figure(table: TrialTable) -> Figure:
    axes = table.axes
    fig = figure(max(7.0, 1.6 * (len(axes) + 1) + 1.5), 5.2)
    ax = fig.add_subplot()
    known = table.has_point()
    cmap, norm = value_scale(table)
    columns = [table.unit(axis) for axis in axes]
    # The value axis spans every value; only the colours may leave out the worst tenth.
    value_unit, value_ticks = _value_unit(np.where(table.done, table.value, np.nan), value_scale(table, robust=False)[1])
    value_unit = np.where(table.unsuccessful, FAILED_POSITION, value_unit)
    xs = np.arange(len(axes) + 1, dtype=float)
    lines = np.stack(columns + [value_unit], axis=1) if len(table) else np.zeros((0, len(xs)))
    n = int(((table.done | table.unsuccessful) & known).sum())
    alpha = 0.8 if n < 100 else 0.45 if n < 600 else 0.25
    width = 1.2 if n < 100 else 0.7

    failed = table.unsuccessful & known
    if failed.any():
        ax.add_collection(LineCollection([np.column_stack([xs, row]) for row in lines[failed]], colors="#9a9a9a",
                                         linewidths=0.7, linestyles="--", alpha=min(0.6, alpha + 0.1), zorder=1,
                                         label=f"failed ({failed.sum()})"))
    done = table.done & known
    if done.any():
        order = np.flatnonzero(done)
        # Better trials on top: draw the worst first.
        order = order[np.argsort(-table.value[order] if table.minimize else table.value[order], kind="stable")]
        segments = LineCollection([np.column_stack([xs, lines[i]]) for i in order], cmap=cmap, norm=norm,
                                  linewidths=width, alpha=alpha, zorder=2)
        segments.set_array(table.value[order])
        ax.add_collection(segments)
        value_colorbar(fig, segments, ax, table, label=f"value ({direction_word(table)})", pad=0.01)
    best = table.best_index()
    if best is not None and known[best]:
        ax.plot(xs, lines[best], color=BEST_COLOUR, linewidth=3, zorder=4, label=f"best: trial {table.trial_id[best]}")
        ax.scatter(xs, lines[best], color=BEST_COLOUR, s=25, zorder=5)

    for i, x in enumerate(xs):
        ax.axvline(x, color="black", linewidth=1, zorder=3)
        ticks = _ticks(axes[i]) if i < len(axes) else value_ticks
        for position, label in ticks:
            ax.plot([x - 0.03, x], [position, position], color="black", linewidth=1, zorder=3)
            ax.text(x - 0.05, position, label, ha="right", va="center", fontsize=7.5, zorder=6,
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 0.5})
    if table.unsuccessful.any():
        ax.text(xs[-1] - 0.05, FAILED_POSITION, "failed", ha="right", va="center", fontsize=7.5, color="#555555")
    ax.set_xticks(xs, [a.label() for a in axes] + ["value"], fontsize=9)
    ax.set_xlim(-0.5, xs[-1] + 0.3)
    ax.set_ylim(FAILED_POSITION - 0.06, 1.06)
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    ax.set_title(f"parameter combinations of {n} trials" + (" (running trials left out)" if table.running.any() else ""))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(0, -0.08), ncol=2, fontsize=8, frameon=False)
    return fig
