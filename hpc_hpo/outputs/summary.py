"""``hpc_hpo status``: where a search stands, read from its results file (also while it runs)."""

from __future__ import annotations

import math
import time
from collections import Counter
from datetime import datetime
from typing import Any

from .._toml import tomllib
from ..results.lockfile import writer_state
from ..results.reader import Results, best_row, params_of
from ..results.records import PRUNED, RUNNING, STATUSES, describe_params, format_duration
from ..search.stopping import RULES, make_rule
from .pbt import pbt_summary, pbt_text, schedule_text


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if math.isfinite(t) else "-"


def status(results: Results, now: float | None = None) -> dict[str, Any]:
    """Where the search stands, as plain data (what ``status --json`` prints): counts by status, the
    best trial, the pace and time left, the running trials (rank, host, GPUs, age), each worker's
    share of the last run spent in trials, and the runs."""
    now = time.time() if now is None else now
    a = results.attrs
    records = results.records()
    counts = Counter(r["status"] for r in records)
    budget = int(a.get("budget", 0))
    finished = sum(n for status, n in counts.items() if status != "running")
    pbt = pbt_summary(results, records)
    if pbt is not None:  # the segments a population runs change as members jump ahead or fail: at least these
        budget = max(budget, len(records))
    best = best_row(results)
    state = run_state(results)
    return {
        "experiment": str(a.get("name", "?")),
        "direction": str(a.get("direction", "minimize")),
        "path": str(results.path),
        "state": state,
        "budget": budget,
        "finished": finished,
        "counts": {status: counts[status] for status in STATUSES if counts[status]},
        "best": None if best is None else {"trial_id": int(best["trial_id"]), "value": float(best["value"]),
                                           "params": _plain(params_of(best, results.param_names))},
        "pace": _pace(records, results, budget - finished, now, state),
        "running": [{"trial_id": int(r["trial_id"]), "rank": int(r["rank"]), "host": str(r["host"]),
                     "gpus": str(r.get("gpus", "")),
                     "age_seconds": float(now - r["t_submit"]) if math.isfinite(r["t_submit"]) else None}
                    for r in records if r["status"] == "running"],
        "workers": _workers(records, results, now),
        "stopping": stopping_summary(results, records),
        "pbt": pbt,
        "runs": [_run(run, i == len(results.runs) - 1, state) for i, run in enumerate(results.runs)],
    }


def status_text(results: Results, now: float | None = None) -> str:
    """:func:`status` as the lines ``hpc_hpo status`` prints."""
    s = status(results, now)
    lines = [f"experiment  {s['experiment']} ({s['direction']}), {s['path']}"]
    by_status = ", ".join(f"{status} {n}" for status, n in s["counts"].items())
    lines.append(f"trials      {s['finished']} of {s['budget']} finished" + (f"; {by_status}" if by_status else ""))
    if s["best"] is not None:
        best = s["best"]
        lines.append(f"best        trial {best['trial_id']}: {best['value']:.6g}  {describe_params(best['params'])}")
    if s["pace"] is not None:
        pace = s["pace"]
        text = f"pace        {pace['trials_per_hour']:.0f} trials/h in the last run"
        if pace["seconds_left"] is not None:
            text += f"; about {format_duration(pace['seconds_left'])} left"
        lines.append(text)
    if s["stopping"] is not None:
        lines.append(f"stopping    {stopping_text(s['stopping'])}")
    if s["pbt"] is not None:
        lines.append(f"pbt         {pbt_text(s['pbt'])}")
        best = s["pbt"]["best"]
        if best is not None:
            lines.append(f"            best: member {best['member']}, trial {best['trial_id']} at epoch "
                         f"{best['end_epoch']}; its schedule:")
            lines += [f"              {line}" for line in schedule_text(best["schedule"])]
    if s["running"]:
        lines.append("running     trial    rank  host                  gpus      age")
        for r in s["running"]:
            lines.append(f"            {r['trial_id']:<8d} {r['rank']:<5d} {r['host'][:20]:<21s} "
                         f"{r['gpus'][:8] or '-':<9s} {_age(r['age_seconds'])}")
    if s["workers"]:
        lines.append("workers     rank  host                  trials  busy")
        for w in s["workers"]:
            lines.append(f"            {w['rank']:<5d} {w['host'][:20]:<21s} {w['trials']:<7d} {100 * w['busy']:.0f}%")
    for run in s["runs"]:
        if run["state"] == KILLED:
            state = "killed (it did not close the file; recovered by the next --resume)"
        elif run["state"] == RUNNING_NOW:
            state = "running"
        elif run["state"] == MAYBE_RUNNING:
            state = "running, or killed"
        else:
            state = f"ended {_clock(run['ended'])}, exit code {run['exit_code']}" + (
                " (stopped early, resumable)" if run["exit_code"] == 3 else "")
        lines.append(f"run {run['run']:<7d} started {_clock(run['started'])}, {run['ranks']} ranks "
                     f"({run['workers']} workers), {state}")
    return "\n".join(lines)


def stopping_config(results: Results) -> dict[str, Any] | None:
    """The ``[stopping]`` table of the experiment that wrote the file, or None without early stopping."""
    try:
        table = tomllib.loads(str(results.attrs.get("config", ""))).get("stopping")
    except tomllib.TOMLDecodeError:
        return None
    if not isinstance(table, dict) or table.get("rule", "none") not in RULES[1:]:
        return None
    return table


def stopping_summary(results: Results, records: list[dict] | None = None) -> dict[str, Any] | None:
    """Per rung of the stopping rule: how many finished trials reached it and how many were stopped there
    (before the next rung); the epochs trained, and what the same trials would have cost without stopping."""
    table = stopping_config(results)
    if table is None:
        return None
    records = results.records() if records is None else records
    finished = [r for r in records if r["status"] != RUNNING]
    max_epochs = int(table["max_epochs"])
    rule = make_rule(table["rule"], int(table.get("min_epochs", 1)), max_epochs,
                     float(table.get("reduction_factor", 3)), True, int(table.get("brackets", 0)))
    ladder = list(rule.ladder)
    rungs = []
    for i, rung in enumerate(ladder):
        below = ladder[i + 1] if i + 1 < len(ladder) else max_epochs
        rungs.append({"epochs": rung, "reached": sum(int(r.get("epochs", 0)) >= rung for r in finished),
                      "stopped": sum(r["status"] == PRUNED and rung <= int(r.get("epochs", 0)) < below
                                     for r in finished)})
    spent = sum(int(r.get("epochs", 0)) for r in finished)
    return {"rule": str(table["rule"]), "metric": str(table.get("metric", "")), "max_epochs": max_epochs,
            "rungs": rungs, "ran_to_the_end": sum(int(r.get("epochs", 0)) >= max_epochs for r in finished),
            "epochs_trained": spent, "epochs_without_stopping": len(finished) * max_epochs}


def stopping_text(s: dict[str, Any]) -> str:
    """``asha on val_loss: 81 reached 1 epoch (50 stopped there), ...; 431 epochs trained, 20% of the 2187 without stopping``."""
    parts = [f"{r['reached']} reached {r['epochs']} epoch{'s' if r['epochs'] != 1 else ''} ({r['stopped']} stopped "
             f"there)" for r in s["rungs"]]
    parts.append(f"{s['ran_to_the_end']} ran to {s['max_epochs']}")
    share = f", {100 * s['epochs_trained'] / s['epochs_without_stopping']:.0f}% of the {s['epochs_without_stopping']} " \
            f"without stopping" if s["epochs_without_stopping"] else ""
    return f"{s['rule']} on {s['metric']}: {', '.join(parts)}; {s['epochs_trained']} epochs trained{share}"


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(seconds)


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters as JSON has them (numpy scalars as Python numbers)."""
    return {k: v.item() if hasattr(v, "item") else v for k, v in params.items()}


def _run(run, last: bool, state: str) -> dict[str, Any]:
    """One row of /runs: its times, size, exit code and state (running, killed, ended)."""
    code, end = int(run["exit_code"]), float(run["t_end"])
    if code == -9 or (last and state == KILLED):
        run_state_ = KILLED
    elif not math.isfinite(end):
        run_state_ = RUNNING_NOW if last and state == RUNNING_NOW else MAYBE_RUNNING
    else:
        run_state_ = ENDED
    return {"run": int(run["run"]), "state": run_state_, "started": float(run["t_start"]),
            "ended": end if math.isfinite(end) else None, "exit_code": None if run_state_ != ENDED else code,
            "ranks": int(run["world_size"]), "workers": int(run["workers"])}


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


def _pace(records: list[dict], results: Results, remaining: int, now: float, state: str) -> dict[str, Any] | None:
    """Trials per hour in the last run, and the time left at that pace while it runs."""
    window = _current_run(results, now)
    if window is None:
        return None
    start, end = window
    finished = [r for r in records if r["status"] != "running" and r["t_end"] >= start]
    if not finished:
        return None
    rate = len(finished) / (end - start)
    left = remaining / rate if remaining > 0 and state in (RUNNING_NOW, MAYBE_RUNNING) else None
    return {"trials_per_hour": rate * 3600, "seconds_left": left}


def _workers(records: list[dict], results: Results, now: float) -> list[dict[str, Any]]:
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
    return [{"rank": int(rank), "host": str(host), "trials": int(count), "busy": seconds / (end - start)}
            for (rank, host), (count, seconds) in sorted(busy.items())]
