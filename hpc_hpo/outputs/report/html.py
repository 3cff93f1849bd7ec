"""The report page: one HTML file with every figure embedded (base64 PNG), a summary and the best parameters.

Self-contained on purpose: no script, no style sheet or font from elsewhere, so it opens
from a cluster's scratch directory, an e-mail or an air-gapped laptop alike.
"""

from __future__ import annotations

import base64
import html
import math
from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from ..._version import __version__
from ...results.reader import Results
from ...results.records import STATUSES, format_duration
from ..export import best_text
from ..pbt import pbt_summary, pbt_text, schedule_text
from ..summary import KILLED, MAYBE_RUNNING, RUNNING_NOW, stopping_summary, stopping_text
from .importance import interaction_share

if TYPE_CHECKING:
    from . import Report
    from .data import TrialTable
    from .importance import Importance

#: Rows of the table of best trials.
TOP_TRIALS = 10

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1150px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
.meta { color: #555; } .state { font-weight: bold; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
td, th { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
nav a { margin-right: 0.8em; }
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _number(value: float) -> str:
    return "" if not math.isfinite(value) else f"{value:.6g}"


def _rows(pairs: list[tuple[str, str]]) -> str:
    return "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in pairs)


def _state(results: Results, table: TrialTable, now: float) -> str:
    if not len(results.runs):
        return "not started"
    code = int(results.runs[-1]["exit_code"])
    if table.run_state == RUNNING_NOW:
        return f"running: the report shows the file as it was at {_clock(now)}"
    if table.run_state == MAYBE_RUNNING:
        return (f"running, or killed (no lock file tells which): the report shows the file as it was at "
                f"{_clock(now)}")
    if table.run_state == KILLED:
        return "its last job was killed without closing the file; the next --resume recovers the file and goes on"
    if code == 3:
        return "stopped early (time limit or signal); run again with --resume to go on"
    if code == 0:
        return "finished"
    return f"ended with exit code {code}"


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if math.isfinite(t) else "-"


def _summary(results: Results, table: TrialTable, now: float) -> list[tuple[str, str]]:
    counts = table.counts
    finished = sum(n for status, n in counts.items() if status != "running")
    rows = [("direction", _e(results.attrs.get("direction", "minimize"))),
            ("trials", f"{finished} of {table.budget} finished; " +
             ", ".join(f"{s} {counts[s]}" for s in STATUSES if counts[s]))]
    best = table.best_index()
    if best is not None:
        rows.append(("best", f"trial {table.trial_id[best]}: <b>{_e(_number(table.value[best]))}</b> "
                             f"({_e(table.strategy[best])}, phase {table.phase[best]})"))
    stopping = stopping_summary(results)
    if stopping is not None:
        rows.append(("early stopping", _e(stopping_text(stopping))))
    pbt = pbt_summary(results)
    if pbt is not None:
        rows.append(("population based training", _e(pbt_text(pbt))))
        if pbt["best"] is not None:
            rows.append(("best member's schedule", "<br>".join(_e(line) for line in schedule_text(pbt["best"]["schedule"]))))
    strategies = Counter(str(s) for s in table.strategy)
    rows.append(("strategies", _e(", ".join(f"{s} {n}" for s, n in strategies.items()) or "-")))
    started = np.isfinite(table.t_start)
    if started.any():
        first, last = float(np.nanmin(table.t_start)), float(np.nanmax(np.append(table.t_end, table.t_start)))
        durations = (table.t_end - table.t_start)[started & np.isfinite(table.t_end)]
        rows.append(("time", f"{_clock(first)} to {_clock(last)} ({format_duration(last - first)}); "
                             f"trials took {format_duration(float(np.median(durations)))} (median), "
                             f"{format_duration(float(np.sum(durations)))} in all"))
    workers = {(int(r), str(h)) for r, h in zip(table.rank, table.host, strict=True)}
    hosts = len({h for _, h in workers})
    rows.append(("workers", f"{len(workers)} on {hosts} host{'s' if hosts != 1 else ''}"))
    rows.append(("runs (jobs)", f"{len(results.runs)}"))
    rows.append(("seed", _e(results.attrs.get("seed", "-"))))
    rows.append(("state", f"<span class='state'>{_e(_state(results, table, now))}</span>"))
    return rows


def _best_params(results: Results, table: TrialTable) -> str:
    best = table.best_index()
    if best is None:
        return "<p>No trial has succeeded yet.</p>"
    params = [(axis.name, table.params[axis.name][best]) for axis in table.axes]
    params += list(table.fixed.items())
    metrics = [(f"metric {name}", _number(float(values[best]))) for name, values in table.metrics.items()
               if math.isfinite(float(values[best]))]
    cells = _rows([(name, f"<code>{_e(_number(v) if isinstance(v, float) else v)}</code>") for name, v in params] +
                  [(name, _e(value)) for name, value in metrics])
    return (f"<table>{cells}</table><p>Ready to paste (<code>python -m hpc_hpo best</code>):</p>"
            f"<pre>{_e(best_text(results))}</pre>")


def _top_trials(table: TrialTable) -> str:
    done = np.flatnonzero(table.done)
    if not len(done):
        return ""
    order = done[np.argsort(table.value[done] if table.minimize else -table.value[done], kind="stable")][:TOP_TRIALS]
    head = "".join(f"<th>{_e(h)}</th>" for h in ["trial", "value", *[a.name for a in table.axes], "strategy", "rank"])
    body = ""
    for i in order:
        cells = [str(table.trial_id[i]), _number(table.value[i])]
        for axis in table.axes:
            v = table.params[axis.name][i]
            cells.append(_number(float(v)) if isinstance(v, (float, np.floating)) else str(v))
        cells += [str(table.strategy[i]), str(table.rank[i])]
        body += "<tr>" + "".join(f"<td class='num'>{_e(c)}</td>" for c in cells) + "</tr>"
    return f"<h2 id='top'>Best {len(order)} trials</h2><table><tr>{head}</tr>{body}</table>"


def _failures(table: TrialTable) -> str:
    failed = table.unsuccessful
    if not failed.any():
        return ""
    first_lines = Counter(str(e).splitlines()[0] if str(e) else "(no message)" for e in table.error[failed])
    rows = "".join(f"<tr><td class='num'>{n}</td><td><code>{_e(line[:300])}</code></td></tr>"
                   for line, n in first_lines.most_common(10))
    return (f"<h2 id='failures'>Failed trials ({int(failed.sum())})</h2>"
            f"<table><tr><th>trials</th><th>error (first line)</th></tr>{rows}</table>")


def _importance(ranking: list[Importance]) -> str:
    if not ranking:
        return ""
    rows = "".join(f"<tr><td>{_e(r.name)}</td><td class='num'>{r.mean:.3f}</td><td class='num'>{r.std:.3f}</td></tr>"
                   for r in ranking)
    rows += f"<tr><td><i>together</i></td><td class='num'>{interaction_share(ranking):.3f}</td><td></td></tr>"
    return ("<table><tr><th>parameter</th><th>share of the variance explained alone</th><th>std over trees</th></tr>"
            f"{rows}</table><p>fANOVA over a random forest fitted to the successful trials; <i>together</i>: "
            "what the parameters explain only in combination.</p>")


def write_html(report: Report, results: Results, table: TrialTable, ranking: list[Importance], now: float,
               refresh: float | None = None) -> None:
    """Write ``report.html``; with ``refresh`` (seconds) the page reloads itself that often (``report --watch``)."""
    figures = []
    for plot in report.plots:
        data = base64.b64encode(plot.path.read_bytes()).decode("ascii")
        figures.append(f"<figure id='{_e(plot.path.stem)}'><h3>{_e(plot.title)}</h3>"
                       f"<img src='data:image/png;base64,{data}' alt='{_e(plot.title)}'>"
                       f"<figcaption>{_e(plot.caption)} ({_e(plot.path.name)})</figcaption></figure>")
    notes = "".join(f"<li>{_e(note)}</li>" for note in report.notes)
    links, seen = [], set()
    for plot in report.plots:  # one link per kind of figure: the first of the two-parameter plots stands for all
        if plot.key not in seen:
            seen.add(plot.key)
            title = "Two-parameter plots" if plot.key == "pair" else plot.title
            links.append(f"<a href='#{_e(plot.path.stem)}'>{_e(title)}</a>")
    reload = f'<meta http-equiv="refresh" content="{max(1, round(refresh))}">' if refresh else ""
    reload_note = (f" &middot; <b>this page reloads every {max(1, round(refresh))} s while "
                   f"<code>report --watch</code> follows the search</b>") if refresh else ""
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(table.name)}: hpc_hpo report</title>
<meta name="viewport" content="width=device-width, initial-scale=1">{reload}<style>{STYLE}</style></head>
<body>
<h1>{_e(table.name)}</h1>
<p class="meta">{_e(results.path)} &middot; objective <code>{_e(results.attrs.get("objective", "?"))}</code>
&middot; report by hpc_hpo {_e(__version__)} at {_e(_clock(now))}{reload_note}</p>
<nav>{''.join(links)}</nav>
<h2 id="summary">Summary</h2><table>{_rows(_summary(results, table, now))}</table>
<h2 id="best">Best parameters</h2>{_best_params(results, table)}
{_top_trials(table)}
{"<h2 id='importance-table'>Parameter importance</h2>" + _importance(ranking) if ranking else ""}
{_failures(table)}
<h2 id="plots">Plots</h2>
{"".join(figures)}
{f"<h2>Left out</h2><ul>{notes}</ul>" if notes else ""}
</body></html>
"""
    temporary = report.html.with_name(f".{report.html.name}.writing")
    temporary.write_text(page, encoding="utf-8")
    temporary.replace(report.html)  # a reloading browser never reads half a page
