"""Per-epoch learning curves: what trials reported while they trained (``/epochs``), one panel per metric.

Each trial is a line coloured by its final objective value (grey when it failed or still
runs), the best trial drawn thick. Files without ``/epochs`` rows get no figure.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .common import BEST_COLOUR, direction_word, figure, value_axis_scale, value_colorbar, value_scale
from .data import TrialTable

#: Most metrics drawn, the most often reported first.
MAX_PANELS = 6


def has_curves(table: TrialTable) -> bool:
    return table.epochs.dtype.names is not None and len(table.epochs) > 0


def curves_figure(table: TrialTable) -> Figure:
    epochs = table.epochs
    names = [name for name, _ in Counter(epochs["name"]).most_common(MAX_PANELS)]
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    fig = figure(4.2 * columns + 1.2, 3.4 * rows + 0.6)
    panels = fig.subplots(rows, columns, squeeze=False)
    cmap, norm = value_scale(table)
    value_of = dict(zip(table.trial_id.tolist(), table.value.tolist(), strict=True))
    done_ids = set(table.trial_id[table.done].tolist())
    best = table.best_index()
    best_id = int(table.trial_id[best]) if best is not None else None
    mappable = None
    for i, name in enumerate(names):
        ax = panels[i // columns][i % columns]
        rows_of = epochs[epochs["name"] == name]
        order = np.lexsort((rows_of["epoch"], rows_of["trial_id"]))
        rows_of = rows_of[order]
        ids, starts = np.unique(rows_of["trial_id"], return_index=True)
        bounds = list(starts[1:]) + [len(rows_of)]
        coloured, grey, best_line = [], [], None
        for trial_id, start, stop in zip(ids.tolist(), starts, bounds, strict=True):
            line = np.column_stack([rows_of["epoch"][start:stop], rows_of["value"][start:stop]])
            if trial_id == best_id:
                best_line = line
            elif trial_id in done_ids:
                coloured.append((line, value_of[trial_id]))
            else:
                grey.append(line)
        alpha = 0.8 if len(ids) < 50 else 0.4 if len(ids) < 500 else 0.2
        if grey:
            ax.add_collection(LineCollection(grey, colors="#9a9a9a", linewidths=0.8, alpha=alpha, linestyles="--"))
        if coloured:
            collection = LineCollection([line for line, _ in coloured], cmap=cmap, norm=norm, linewidths=1.0,
                                        alpha=alpha)
            collection.set_array(np.array([value for _, value in coloured]))
            ax.add_collection(collection)
            mappable = collection
        if best_line is not None:
            ax.plot(best_line[:, 0], best_line[:, 1], color=BEST_COLOUR, linewidth=2.5, marker="o",
                    markersize=3 if len(best_line) < 60 else 0, label=f"best: trial {best_id}")
            ax.legend(fontsize=7, loc="best")
        ax.autoscale_view()
        value_axis_scale(ax, rows_of["value"])
        ax.set_title(f"{name} ({len(ids)} trials)", fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for j in range(len(names), rows * columns):
        panels[j // columns][j % columns].set_axis_off()
    if mappable is not None:
        value_colorbar(fig, mappable, panels, table, label=f"trial's value ({direction_word(table)})", shrink=0.8)
    fig.suptitle("learning curves (grey dashed: failed or still running)")
    return fig
