"""Per-epoch learning curves: what trials reported while they trained (``/epochs``), one panel per metric.

Each trial is a line coloured by its final objective value (grey when it failed or still
runs), the best trial drawn thick; a trial the stopping rule stopped is faded, with a cross where
it stopped. Files without ``/epochs`` rows get no figure. :func:`rungs_figure` shows where the
epochs of a search with early stopping went.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .common import BEST_COLOUR, STATUS_COLOURS, direction_word, figure, value_axis_scale, value_colorbar, value_scale
from .data import TrialTable

#: Most metrics drawn, the most often reported first.
MAX_PANELS = 6
PRUNED_COLOUR = STATUS_COLOURS["pruned"]


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
    pruned_ids = set(table.trial_id[table.pruned].tolist())
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
        coloured, grey, faded, best_line = [], [], [], None
        for trial_id, start, stop in zip(ids.tolist(), starts, bounds, strict=True):
            line = np.column_stack([rows_of["epoch"][start:stop], rows_of["value"][start:stop]])
            if trial_id == best_id:
                best_line = line
            elif trial_id in done_ids:
                coloured.append((line, value_of[trial_id]))
            elif trial_id in pruned_ids:
                faded.append(line)
            else:
                grey.append(line)
        alpha = 0.8 if len(ids) < 50 else 0.4 if len(ids) < 500 else 0.2
        if faded:
            ax.add_collection(LineCollection(faded, colors=PRUNED_COLOUR, linewidths=0.7, alpha=min(alpha, 0.3)))
            ends = np.array([line[-1] for line in faded])
            ax.scatter(ends[:, 0], ends[:, 1], marker="x", s=14, color=PRUNED_COLOUR, alpha=min(1.0, 2 * alpha),
                       linewidths=0.8, label=f"stopped early ({len(faded)})", zorder=3)
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
    fig.suptitle("learning curves (grey dashed: failed or running" + ("; faded, x: stopped early)" if pruned_ids else ")"),
                 fontsize=10)
    return fig


def rungs_figure(summary: dict) -> Figure:
    """Epochs trained per rung of the stopping rule: by the trials stopped there, and by those that ran to the end
    (``summary`` as :func:`hpc_hpo.outputs.summary.stopping_summary` gives it)."""
    fig = figure(7.5, 3.8)
    ax = fig.subplots()
    rungs = summary["rungs"]
    labels = [f"{r['epochs']}" for r in rungs] + [f"{summary['max_epochs']} (end)"]
    stopped = [r["stopped"] for r in rungs] + [summary["ran_to_the_end"]]
    # Epochs of the trials that stopped at each rung (at least the rung's epochs each); the end: max_epochs each.
    spent = [r["stopped"] * r["epochs"] for r in rungs] + [summary["ran_to_the_end"] * summary["max_epochs"]]
    bars = ax.bar(range(len(labels)), spent, color=[PRUNED_COLOUR] * len(rungs) + [BEST_COLOUR], alpha=0.8)
    for bar, count in zip(bars, stopped, strict=True):
        ax.annotate(f"{count} trial{'s' if count != 1 else ''}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel("stopped after this many epochs")
    ax.set_ylabel("epochs trained")
    share = summary["epochs_trained"] / summary["epochs_without_stopping"] if summary["epochs_without_stopping"] else 1
    ax.set_title(f"{summary['rule']} on {summary['metric']}: {summary['epochs_trained']} epochs trained, "
                 f"{100 * share:.0f}% of {summary['epochs_without_stopping']} without stopping", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    return fig
