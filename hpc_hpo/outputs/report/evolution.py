"""Result evolution: each trial's value against its index, by strategy, with the best so far (PHS ``result_evolution``)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .common import BEST_COLOUR, direction_word, failed_rug, figure, marker_size, strategy_style, value_axis_scale
from .data import TrialTable


def evolution_figure(table: TrialTable) -> Figure:
    fig = figure(9, 5)
    ax = fig.add_subplot()
    done = table.done
    n = len(table)
    size = marker_size(n)
    for strategy in dict.fromkeys(table.strategy):
        mask = done & (table.strategy == strategy)
        if not mask.any():
            continue
        marker, colour = strategy_style(strategy)
        ax.scatter(table.trial_id[mask], table.value[mask], marker=marker, s=size * (1.8 if marker == "*" else 1),
                   color=colour, alpha=0.85 if n < 500 else 0.5, linewidths=0, label=f"{strategy} ({mask.sum()})",
                   zorder=3)
    best = table.best_so_far()
    if np.isfinite(best).any():
        ax.step(table.trial_id, best, where="post", color="black", linewidth=1.4, label="best so far", zorder=4)
    unsuccessful = table.unsuccessful
    failed_rug(ax, table.trial_id[unsuccessful], f"failed ({unsuccessful.sum()})" if unsuccessful.any() else None)
    running = table.running
    if running.any():
        for trial_id in table.trial_id[running]:
            ax.axvline(trial_id, color="#1f77b4", alpha=0.25, linewidth=1)
        ax.plot([], [], color="#1f77b4", alpha=0.5, label=f"running ({running.sum()})")
    index = table.best_index()
    if index is not None:
        ax.scatter([table.trial_id[index]], [table.value[index]], s=size * 6, facecolors="none",
                   edgecolors=BEST_COLOUR, linewidths=2, zorder=5)
        # Point the label into the plot: the best value lies at its bottom (minimising) or top edge.
        right = n > 1 and table.trial_id[index] > np.median(table.trial_id)
        ax.annotate(f"best: trial {table.trial_id[index]}\n{table.value[index]:.4g}",
                    (table.trial_id[index], table.value[index]), xytext=(-14 if right else 14, 14 if table.minimize else -14),
                    textcoords="offset points", ha="right" if right else "left",
                    va="bottom" if table.minimize else "top", fontsize=9, color=BEST_COLOUR,
                    arrowprops={"arrowstyle": "-", "color": BEST_COLOUR})
    value_axis_scale(ax, table.value[done])
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"value ({direction_word(table)})")
    if n:
        ax.set_xlim(table.trial_id.min() - 0.5 - 0.02 * n, table.trial_id.max() + 0.5 + 0.02 * n)
    if not done.any():
        ax.set_yticks([])
        ax.text(0.5, 0.5, "no successful trial yet", transform=ax.transAxes, ha="center", va="center",
                fontsize=12, color="#555555")
    ax.set_title(f"{table.name}: value of each trial ({done.sum()} done of {n})")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8, framealpha=0.85)
    return fig
