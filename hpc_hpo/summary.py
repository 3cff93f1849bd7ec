"""``hpc_hpo status``: where a search stands, read from its results file (also while it runs)."""

from __future__ import annotations

import math
import time
from collections import Counter
from datetime import datetime

from .lockfile import writer_state
from .records import STATUSES, describe_params, format_duration
from .store import Results, best_row, params_of


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if math.isfinite(t) else "-"


def status_text(results: Results, now: float | None = None) -> str:
    """A short report: counts by status, the best trial, the pace and time left, the running trials
    (rank, host, GPUs, age), each worker's share of the last run spent in trials, and the runs."""
    now = time.time() if now is None else now
    a = results.attrs
    records = results.records()
    counts = Counter(r["status"] for r in records)
    budget = int(a.get("budget", 0))
    finished = sum(n for status, n in counts.items() if status != "running")
    lines = [f"experiment  {a.get('name', '?')} ({a.get('direction', 'minimize')}), {results.path}"]
    by_status = ", ".join(f"{status} {counts[status]}" for status in STATUSES if counts[status])
    lines.append(f"trials      {finished} of {budget} finished" + (f"; {by_status}" if by_status else ""))
    best = best_row(results)
    if best is not None:
        params = describe_params(params_of(best, results.param_names))
        lines.append(f"best        trial {best['trial_id']}: {best['value']:.6g}  {params}")
    running = [r for r in records if r["status"] == "running"]
    lines += _pace(records, results, budget - finished, now)
    if running:
        lines.append("running     trial    rank  host                  gpus      age")
        for r in running:
            age = format_duration(now - r["t_submit"])
            lines.append(f"            {r['trial_id']:<8d} {r['rank']:<5d} {r['host'][:20]:<21s} "
                         f"{r.get('gpus', '')[:8] or '-':<9s} {age}")
    lines += _workers(records, results, now)
    last = run_state(results)
    for i, run in enumerate(results.runs):
        end = run["t_end"]
        code = int(run["exit_code"])
        if code == -9 or (i == len(results.runs) - 1 and last == KILLED):
            state = "killed (it did not close the file; recovered by the next --resume)"
        elif not math.isfinite(end):
            state = "running" if i == len(results.runs) - 1 and last == RUNNING_NOW else "running, or killed"
        else:
            state = f"ended {_clock(end)}, exit code {code}" + (" (stopped early, resumable)" if code == 3 else "")
        lines.append(f"run {run['run']:<7d} started {_clock(run['t_start'])}, {run['world_size']} ranks "
                     f"({run['workers']} workers), {state}")
    return "\n".join(lines)


#: What :func:`run_state` says of a search's last run.
RUNNING_NOW, MAYBE_RUNNING, KILLED, ENDED, NOT_STARTED = "running", "running or killed", "killed", "ended", "none"


def run_state(results: Results) -> str:
    """Whether the last run (job) of this file still runs: its /runs row is open and a process holds the file's
    lock (``running``), the row is open and nobody holds the lock (``killed``: a job that ends closes both), or
    the row is open and there is no lock to ask (``running or killed``: a copy of the file, a file system
    without locks); ``ended`` once the row is closed, ``none`` before the first run."""
    if not len(results.runs):
        return NOT_STARTED
    last = results.runs[-1]
    if int(last["exit_code"]) == -9:
        return KILLED
    if math.isfinite(float(last["t_end"])):
        return ENDED
    return {"running": RUNNING_NOW, "gone": KILLED}.get(writer_state(results.path), MAYBE_RUNNING)


def _current_run(results: Results, now: float) -> tuple[float, float] | None:
    """(start, end or now) of the last run, the one whose pace and workers the report shows."""
    if not len(results.runs):
        return None
    run = results.runs[-1]
    end = float(run["t_end"]) if math.isfinite(run["t_end"]) else now
    return float(run["t_start"]), max(end, float(run["t_start"]) + 1e-9)


def _pace(records: list[dict], results: Results, remaining: int, now: float) -> list[str]:
    """Trials per hour in the last run, and the time left at that pace."""
    window = _current_run(results, now)
    if window is None:
        return []
    start, end = window
    finished = [r for r in records if r["status"] != "running" and r["t_end"] >= start]
    if not finished:
        return []
    rate = len(finished) / (end - start)
    text = f"pace        {rate * 3600:.0f} trials/h in the last run"
    if remaining > 0 and run_state(results) in (RUNNING_NOW, MAYBE_RUNNING):
        text += f"; about {format_duration(remaining / rate)} left"
    return [text]


def _workers(records: list[dict], results: Results, now: float) -> list[str]:
    """Per worker in the last run: trials, and the share of the run it spent in trials."""
    window = _current_run(results, now)
    if window is None:
        return []
    start, end = window
    busy: dict[tuple[int, str], list[float]] = {}
    for r in records:
        running = r["status"] == "running"
        # A running trial's start comes with its result: until then it has been busy since it was handed out.
        began = r["t_submit"] if running else r["t_start"]
        if not math.isfinite(began) or began < start:
            continue
        stop = r["t_end"] if not running and math.isfinite(r["t_end"]) else now
        entry = busy.setdefault((r["rank"], r["host"]), [0, 0.0])
        entry[0] += 1
        entry[1] += max(0.0, min(stop, end) - began)
    if not busy:
        return []
    lines = ["workers     rank  host                  trials  busy"]
    for (rank, host), (count, seconds) in sorted(busy.items()):
        lines.append(f"            {rank:<5d} {host[:20]:<21s} {count:<7d} {100 * seconds / (end - start):.0f}%")
    return lines
