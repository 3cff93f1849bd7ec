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
from dataclasses import dataclass

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


@dataclass
class _Lanes:
    """Where every trial goes: a lane per (rank, host), times in ``unit`` since the first start."""

    started: np.ndarray  # which trials have started (finished ones and running ones)
    begin: np.ndarray  # start of each trial (hand-out for a running one)
    end: np.ndarray  # end of each trial (now, or the last end, for a running one)
    rows: dict[tuple[int, str], int]  # lane -> row
    origin: float
    finish: float
    scale: float
    unit: str

    def of(self, table: TrialTable, lane: tuple[int, str]) -> np.ndarray:
        return self.started & (table.rank == lane[0]) & (table.host == lane[1])

    def x(self, t):
        return (t - self.origin) / self.scale


def timeline_figure(table: TrialTable, now: float | None = None) -> Figure:
    now = time.time() if now is None else now
    started = np.isfinite(table.t_start) | table.running
    lanes = sorted({(int(r), str(h)) for r, h, s in zip(table.rank, table.host, started, strict=True) if s})
    fig = figure(10, max(3.0, min(14.0, 1.2 + 0.38 * len(lanes))))
    ax = fig.add_subplot()
    if not lanes:
        ax.text(0.5, 0.5, "no trial has started yet", transform=ax.transAxes, ha="center", va="center")
        ax.set_axis_off()
        return fig
    begin = np.where(table.running, table.t_submit, table.t_start)
    end = np.where(table.running, now if table.running_now else np.nanmax(table.t_end, initial=now), table.t_end)
    origin, finish = float(np.nanmin(begin[started])), float(np.nanmax(end[started]))
    scale, unit = _unit(finish - origin)
    layout = _Lanes(started, begin, end, {lane: i for i, lane in enumerate(lanes)}, origin, finish, scale, unit)
    _draw_trials(ax, table, layout)
    suggested = _draw_bayesian_steps(ax, table, layout)
    _draw_busy_shares(ax, table, layout, now)
    _mark_resumed_runs(ax, table, layout)
    _label(ax, table, layout, suggested)
    return fig


BAR_HEIGHT = 0.7


def _draw_trials(ax, table: TrialTable, layout: _Lanes) -> None:
    shortest = (layout.finish - layout.origin) / layout.scale * 0.001  # a trial that failed at once: a sliver
    for status, colour in STATUS_COLOURS.items():
        for lane, row in layout.rows.items():
            sel = layout.of(table, lane) & (table.status == status)
            if sel.any():
                bars = [(layout.x(b), max((e - b) / layout.scale, shortest))
                        for b, e in zip(layout.begin[sel], layout.end[sel], strict=True)]
                ax.broken_barh(bars, (row - BAR_HEIGHT / 2, BAR_HEIGHT), facecolors=colour,
                               edgecolors="white" if len(bars) < 200 else "none", linewidth=0.3)


def _draw_bayesian_steps(ax, table: TrialTable, layout: _Lanes) -> np.ndarray:
    """The dark segment before each Bayesian trial: its worker choosing the point. Returns which trials have one."""
    suggested = layout.started & np.isfinite(table.suggest_seconds) & ~table.running
    for lane, row in layout.rows.items():
        sel = suggested & layout.of(table, lane)
        if sel.any():
            bars = [(layout.x(b - s), s / layout.scale)
                    for b, s in zip(layout.begin[sel], table.suggest_seconds[sel], strict=True)]
            ax.broken_barh(bars, (row - BAR_HEIGHT / 2, BAR_HEIGHT), facecolors=SUGGEST_COLOUR, edgecolors="none")
    return suggested


def _draw_busy_shares(ax, table: TrialTable, layout: _Lanes, now: float) -> None:
    """Each lane's share of the jobs' time spent in trials, right of the plot."""
    job_time = _job_seconds(table, layout.origin, layout.finish, now) or max(layout.finish - layout.origin, 1e-9)
    for lane, row in layout.rows.items():
        sel = layout.of(table, lane)
        busy = min(1.0, float(np.sum(np.minimum(layout.end[sel], layout.finish) - layout.begin[sel])) / job_time)
        ax.text(1.005, row, f"{100 * busy:.0f}%", transform=ax.get_yaxis_transform(), va="center", fontsize=7.5)


def _mark_resumed_runs(ax, table: TrialTable, layout: _Lanes) -> None:
    for run in table.runs[1:]:  # where a resumed job took over: the first run starts the axis anyway
        t0 = float(run["t_start"])
        if math.isfinite(t0) and layout.origin <= t0 <= layout.finish:
            ax.axvline(layout.x(t0), color="#333333", linestyle="--", linewidth=0.9)
            ax.text(layout.x(t0), len(layout.rows) - 0.45, f" run {int(run['run'])}", fontsize=7.5, va="bottom")


def _label(ax, table: TrialTable, layout: _Lanes, suggested: np.ndarray) -> None:
    """Lane names (rank, host, GPUs), axes, legend and title."""
    lanes = list(layout.rows)
    labels = []
    for lane in lanes:
        gpus = Counter(str(g) for g in table.gpus[layout.of(table, lane)]).most_common(1)[0][0] or "-"
        labels.append(f"r{lane[0]} {lane[1][:14]} {'GPU ' + gpus if gpus != 'cpu' else 'cpu'}")
    stride = label_stride(len(lanes), 40)
    ax.set_yticks([layout.rows[lane] for lane in lanes][::stride], labels[::stride],
                  fontsize=8 if len(lanes) < 20 else 6.5)
    ax.set_ylim(len(lanes) - 0.4, -0.6)
    ax.set_xlim(0, max(layout.finish - layout.origin, 1e-9) / layout.scale * 1.01)
    ax.set_xlabel(f"time since the first trial started ({layout.unit})")
    present = [s for s in STATUS_COLOURS if (layout.started & (table.status == s)).any()]
    handles = [Patch(color=STATUS_COLOURS[s], label=s) for s in present]
    if suggested.any():
        handles.append(Patch(color=SUGGEST_COLOUR, label="choosing a Bayesian point"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0, -0.14 if len(lanes) > 3 else -0.3), ncol=5,
              fontsize=8, frameon=False)
    ax.set_title(f"worker timeline: {len(lanes)} workers, {int(layout.started.sum())} trials (right: share of time "
                 f"in trials)")
    ax.grid(axis="x", alpha=0.3)
