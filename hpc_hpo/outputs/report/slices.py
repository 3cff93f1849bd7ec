"""The value against each parameter on its own (a slice plot, as in Optuna), coloured by trial id.

Early trials are dark and late ones bright, so one sees where the search went over time;
failed trials are red crosses along the bottom of each panel.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from .common import (
    BEST_COLOUR,
    better_last,
    direction_word,
    failed_rug,
    figure,
    jitter,
    marker_size,
    param_axis,
    value_axis_scale,
)
from .data import TrialTable


def slices_figure(table: TrialTable) -> Figure:
    axes = table.axes
    columns = min(3, len(axes))
    height = math.ceil(len(axes) / columns)
    fig = figure(4.0 * columns + 1.0, 3.3 * height + 0.5)
    panels = fig.subplots(height, columns, squeeze=False, sharey=True)
    known = table.has_point()
    done = table.done & known
    size = marker_size(int(done.sum()))
    first, last = (int(table.trial_id.min()), int(table.trial_id.max())) if len(table) else (0, 0)
    norm = Normalize(first, max(last, first + 1))
    best = table.best_index()
    mappable = None
    for i, axis in enumerate(axes):
        ax = panels[i // columns][i % columns]
        x = jitter(axis, table.numeric(axis), seed=i)
        if done.any():
            order = better_last(table, done)
            mappable = ax.scatter(x[order], table.value[order], c=table.trial_id[order], cmap="plasma", norm=norm, s=size,
                                  alpha=0.85 if done.sum() < 500 else 0.5, linewidths=0)
        if best is not None and known[best]:
            ax.scatter([x[best]], [table.value[best]], s=size * 5 + 40, facecolors="none", edgecolors=BEST_COLOUR,
                       linewidths=1.8, zorder=5)
        failed = table.unsuccessful & known
        failed_rug(ax, x[failed])
        param_axis(ax, axis, "x")
        value_axis_scale(ax, table.value[done])
        ax.grid(alpha=0.3)
        if i % columns == 0:
            ax.set_ylabel("value")
    for j in range(len(axes), height * columns):
        panels[j // columns][j % columns].set_axis_off()
    if mappable is not None:
        fig.colorbar(mappable, ax=panels, label="trial", shrink=0.8)
    fig.suptitle(f"value against each parameter ({direction_word(table)}; red crosses: failed; circled: best)")
    return fig


def has_slices(table: TrialTable) -> bool:
    return bool(table.axes) and bool(np.any(table.done))
