"""Worker timeline: a lane per worker (rank, host, GPUs), a bar per trial, coloured by status (PHS ``create_worker_timeline``).

White space in a lane is a worker waiting; the dark segment just before a Bayesian trial is
the time its worker spent choosing the point (``suggest_seconds``). Each lane ends with the
share of the jobs' time it spent in trials (time between resumed jobs does not count).
Dashed lines mark where resumed runs (jobs) began.
"""

from __future__ import annotations

import math
import time
from collections import Counter

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .common import STATUS_COLOURS, figure, label_stride
from .data import TrialTable

SUGGEST_COLOUR = "#4b0082"


def _unit(span: float) -> tuple[float, str]:
    if span > 3 * 3600:
        return 3600.0, "h"
    if span > 3 * 60:
        return 60.0, "min"
    return 1.0, "s"


def _job_seconds(table: TrialTable, origin: float, finish: float, now: float) -> float:
    """Seconds within [origin, finish] during which a job ran: the time between resumed jobs is nobody's idle time."""
    total = 0.0
    for run in table.runs:
        start = float(run["t_start"])
        stop = float(run["t_end"]) if math.isfinite(float(run["t_end"])) else now
        if math.isfinite(start):
            total += max(0.0, min(stop, finish) - max(start, origin))
    return total


def timeline_figure(table: TrialTable, now: float | None = None) -> Figure:
    now = time.time() if now is None else now
    started = np.isfinite(table.t_start) | table.running
    begin = np.where(table.running, table.t_submit, table.t_start)
    end = np.where(table.running, now if table.running_now else np.nanmax(table.t_end, initial=now), table.t_end)
    lanes = sorted({(int(r), str(h)) for r, h, s in zip(table.rank, table.host, started, strict=True) if s})
    fig = figure(10, max(3.0, min(14.0, 1.2 + 0.38 * len(lanes))))
    ax = fig.add_subplot()
    if not lanes:
        ax.text(0.5, 0.5, "no trial has started yet", transform=ax.transAxes, ha="center", va="center")
        ax.set_axis_off()
        return fig
    origin = float(np.nanmin(begin[started]))
    finish = float(np.nanmax(end[started]))
    scale, unit = _unit(finish - origin)
    rows = {lane: i for i, lane in enumerate(lanes)}
    labels = []
    for lane in lanes:
        mask = started & (table.rank == lane[0]) & (table.host == lane[1])
        gpus = Counter(str(g) for g in table.gpus[mask]).most_common(1)[0][0] or "-"
        labels.append(f"r{lane[0]} {lane[1][:14]} {'GPU ' + gpus if gpus != 'cpu' else 'cpu'}")
    height = 0.7
    shortest = (finish - origin) / scale * 0.001  # a trial that failed at once still shows as a sliver
    for status, colour in STATUS_COLOURS.items():
        mask = started & (table.status == status)
        for lane, row in rows.items():
            sel = mask & (table.rank == lane[0]) & (table.host == lane[1])
            if sel.any():
                bars = [((b - origin) / scale, max((e - b) / scale, shortest))
                        for b, e in zip(begin[sel], end[sel], strict=True)]
                ax.broken_barh(bars, (row - height / 2, height), facecolors=colour,
                               edgecolors="white" if len(bars) < 200 else "none", linewidth=0.3)
    suggested = started & np.isfinite(table.suggest_seconds) & ~table.running
    for lane, row in rows.items():
        sel = suggested & (table.rank == lane[0]) & (table.host == lane[1])
        if sel.any():
            bars = [((b - s - origin) / scale, s / scale)
                    for b, s in zip(begin[sel], table.suggest_seconds[sel], strict=True)]
            ax.broken_barh(bars, (row - height / 2, height), facecolors=SUGGEST_COLOUR, edgecolors="none")
    span = max(finish - origin, 1e-9)
    job_time = _job_seconds(table, origin, finish, now) or span
    for lane, row in rows.items():
        sel = started & (table.rank == lane[0]) & (table.host == lane[1])
        busy = min(1.0, float(np.sum(np.minimum(end[sel], finish) - begin[sel])) / job_time)
        ax.text(1.005, row, f"{100 * busy:.0f}%", transform=ax.get_yaxis_transform(), va="center", fontsize=7.5)
    for run in table.runs[1:]:  # where a resumed job took over: the first run starts the axis anyway
        t0 = float(run["t_start"])
        if math.isfinite(t0) and origin <= t0 <= finish:
            ax.axvline((t0 - origin) / scale, color="#333333", linestyle="--", linewidth=0.9)
            ax.text((t0 - origin) / scale, len(lanes) - 0.45, f" run {int(run['run'])}", fontsize=7.5, va="bottom")
    stride = label_stride(len(lanes), 40)
    ax.set_yticks([rows[lane] for lane in lanes][::stride], labels[::stride], fontsize=8 if len(lanes) < 20 else 6.5)
    ax.set_ylim(len(lanes) - 0.4, -0.6)
    ax.set_xlim(0, span / scale * 1.01)
    ax.set_xlabel(f"time since the first trial started ({unit})")
    present = [s for s in STATUS_COLOURS if (started & (table.status == s)).any()]
    handles = [Patch(color=STATUS_COLOURS[s], label=s) for s in present]
    if suggested.any():
        handles.append(Patch(color=SUGGEST_COLOUR, label="choosing a Bayesian point"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0, -0.14 if len(lanes) > 3 else -0.3), ncol=5,
              fontsize=8, frameon=False)
    ax.set_title(f"worker timeline: {len(lanes)} workers, {int(started.sum())} trials (right: share of time in trials)")
    ax.grid(axis="x", alpha=0.3)
    return fig
