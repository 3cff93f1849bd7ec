"""``hpc_hpo status``: where a search stands, read from its results file (also while it runs)."""

from __future__ import annotations

import math
import time
from collections import Counter
from datetime import datetime

from .records import STATUSES, describe_params, format_duration
from .store import Results, best_row, params_of


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if math.isfinite(t) else "-"


def status_text(results: Results, now: float | None = None) -> str:
    """A short report: counts by status, the best trial, the running trials, the runs."""
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
    if running:
        lines.append("running     trial    rank  host                  age")
        for r in running:
            age = format_duration(now - r["t_submit"])
            lines.append(f"            {r['trial_id']:<8d} {r['rank']:<5d} {r['host'][:20]:<21s} {age}")
    for run in results.runs:
        end = run["t_end"]
        code = int(run["exit_code"])
        if code == -9:
            state = "killed (it did not close the file; recovered by the next --resume)"
        elif not math.isfinite(end):
            state = "running, or killed"
        else:
            state = f"ended {_clock(end)}, exit code {code}" + (" (stopped early, resumable)" if code == 3 else "")
        lines.append(f"run {run['run']:<7d} started {_clock(run['t_start'])}, {run['world_size']} ranks "
                     f"({run['workers']} workers), {state}")
    return "\n".join(lines)
