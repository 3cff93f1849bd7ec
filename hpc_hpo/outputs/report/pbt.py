"""The pbt page: each member's values against epochs (exploit jumps dashed), each member's score over epochs, and
the lineage of the best member drawn thick in black across both.

Drawn from the segment rows (:mod:`hpc_hpo.outputs.pbt`): a segment is a horizontal step from its start to its end
epoch at the value it trained with, and a point at its end epoch with its score; a segment that restored another
member's checkpoint starts with a dashed line from that checkpoint (the exploit).
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from ..pbt import lineage
from .common import figure

#: Most parameters drawn, one panel each (the score panel comes last).
MAX_PARAMS = 4


def pbt_figure(rows: list[dict], names: list[str], log_names: set[str], minimize: bool, best_id: int | None,
               ylabel: str = "value") -> Figure:
    """``rows``: the segment rows; ``names``: the parameters to draw (searched, not fixed)."""
    names = names[:MAX_PARAMS]
    numeric = [n for n in names if all(isinstance(r[f"param_{n}"], (int, float)) for r in rows)]
    panels_n = len(numeric) + 1
    fig = figure(9.0, 2.4 * panels_n + 0.8)
    panels = fig.subplots(panels_n, 1, sharex=True, squeeze=False)[:, 0]
    by_id = {int(r["trial_id"]): r for r in rows}
    members = sorted({int(r["member"]) for r in rows})
    colours = {m: f"C{i % 10}" for i, m in enumerate(members)}
    chain = {int(r["trial_id"]) for r in lineage(by_id, best_id)} if best_id is not None else set()
    finished = [r for r in rows if r["status"] != "running"]
    for ax, name in zip(panels, numeric, strict=False):
        for r in finished:
            value = float(r[f"param_{name}"])
            colour = "black" if int(r["trial_id"]) in chain else colours[int(r["member"])]
            width = 2.6 if int(r["trial_id"]) in chain else 1.2
            ax.plot([r["start_epoch"], r["end_epoch"]], [value, value], color=colour, lw=width, solid_capstyle="butt")
            parent = by_id.get(int(r["parent"]))
            if parent is not None and parent["member"] != r["member"]:
                ax.plot([r["start_epoch"]] * 2, [float(parent[f"param_{name}"]), value], color=colour, lw=0.9,
                        ls="--")
        if name in log_names:
            ax.set_yscale("log")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    ax = panels[-1]
    for member in members:
        own = sorted((r for r in finished if int(r["member"]) == member and r["status"] == "done"),
                     key=lambda r: r["end_epoch"])
        for r in own:
            parent = by_id.get(int(r["parent"]))
            start = (parent["end_epoch"], parent["value"]) if parent is not None and parent["status"] == "done" \
                else None
            style = "--" if parent is not None and parent["member"] != r["member"] else "-"
            if start is not None and math.isfinite(start[1]):
                ax.plot([start[0], r["end_epoch"]], [start[1], r["value"]], color=colours[member], lw=1.0, ls=style)
        if own:
            ax.plot([r["end_epoch"] for r in own], [r["value"] for r in own], "o", ms=3, color=colours[member],
                    label=f"member {member}")
    best_chain = sorted((by_id[t] for t in chain), key=lambda r: r["end_epoch"])
    if best_chain:
        ax.plot([r["end_epoch"] for r in best_chain], [r["value"] for r in best_chain], color="black", lw=2.4,
                label="best member's lineage")
    failed = [r for r in finished if r["status"] != "done"]
    if failed:
        ax.plot([r["end_epoch"] for r in failed], [np.nan] * len(failed))  # keeps the x range
    ax.set_ylabel(f"{ylabel} ({'lower' if minimize else 'higher'} is better)")
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    if len(members) <= 12:
        ax.legend(fontsize=7, ncol=min(4, len(members) + 1), loc="best")
    fig.suptitle("Population Based Training: values and scores of each member; dashed: exploits")
    return fig
