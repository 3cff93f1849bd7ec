"""``hpc_hpo report``: plots of a results file as PNG files and one self-contained HTML page.

Read-only over the store, so it works on a finished search and on one still running (it
shows the moment it read). Every figure is its own module; this one decides which apply,
names the files, and hands them to :mod:`hpc_hpo.outputs.report.html`. Needs matplotlib
(``pip install hpc_hpo[plots]``); imported only by this command.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import ConfigError
from ...results.reader import read_results
from ..summary import stopping_summary


@dataclass(frozen=True)
class Plot:
    """One figure of the report: its file and what it shows."""

    key: str
    title: str
    path: Path
    caption: str


@dataclass
class Report:
    directory: Path
    html: Path
    plots: list[Plot] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # figures left out, and why
    running: bool = False  # the search was still running when the file was read
    finished: int = 0  # trials finished by then


def _require_matplotlib() -> None:
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("report: needs matplotlib (pip install 'hpc_hpo[plots]', or pip install matplotlib); "
                          "status, export and best need nothing") from None

    matplotlib.use("Agg", force=True)


#: ``--pairs all``: every pair, however many parameters.
EVERY_PAIR = "all"


def parse_pairs(texts: list[str] | None) -> list[tuple[str, str]] | None:
    """``["lr:units", "x:lr"]`` (or comma-separated) as pairs of names; None for the default or ``all``."""
    parts = [part.strip() for item in texts or [] for part in item.split(",") if part.strip()]
    if parts == [EVERY_PAIR] or not parts:
        return None
    if EVERY_PAIR in parts:
        raise ConfigError(f"--pairs: '{EVERY_PAIR}' draws every pair and stands alone (got '{' '.join(texts)}')")
    pairs = []
    for text in parts:
        names = [name.strip() for name in text.split(":")]
        if len(names) != 2 or not all(names):
            raise ConfigError(f"--pairs: a pair is two parameter names joined by ':', e.g. lr:units (got '{text}')")
        pairs.append((names[0], names[1]))
    return pairs


def _file_name(*names: str) -> str:
    return "__".join(re.sub(r"[^A-Za-z0-9_.-]", "_", n) for n in names)


def _remove_stale_pairs(out: Path, keep: set[str]) -> None:
    """Pair plots an earlier report wrote into ``out`` that this one does not (so the directory
    shows what the page shows, also while --watch follows a changing ranking)."""
    for path in out.glob("pair_*.png"):
        if path.name not in keep:
            path.unlink(missing_ok=True)


def make_report(results_path: str | Path, directory: str | Path | None = None, pairs: list[str] | None = None,
                contour: bool = True, now: float | None = None, refresh: float | None = None) -> Report:
    """Write every figure that applies to ``results_path`` into ``directory`` (default ``<results>-report``).

    ``pairs``: the two-parameter plots, ``["lr:units", ...]`` or ``["all"]`` (default: every pair
    of up to 6 parameters, else those of the 6 most important). ``refresh``: seconds after which
    the page reloads itself while the search still runs (``--watch``).
    """
    _require_matplotlib()
    from .data import trial_table
    from .html import write_html
    from .importance import importances
    from .pairs import choose_pairs

    now = time.time() if now is None else now
    results = read_results(results_path)
    table = trial_table(results)
    named = parse_pairs(pairs)
    ranking = importances(table)
    chosen, pairs_note = choose_pairs(table, named, [imp.name for imp in ranking if imp.mean > 0],
                                      every=named is None and bool(pairs))
    out = _report_directory(results_path, directory)
    report = Report(out, out / "report.html")
    _draw_evolution_and_pairs(report, table, chosen, pairs_note, contour)
    _draw_the_rest(report, table, ranking, now, stopping_summary(results))
    _draw_pbt(report, results)
    write_html(report, results, table, ranking, now, refresh if table.running_now else None)
    report.running = table.running_now
    report.finished = sum(n for status, n in table.counts.items() if status != "running")
    return report


def _report_directory(results_path: str | Path, directory: str | Path | None) -> Path:
    """The report's directory, made if needed: ``directory``, or the results path without ``.h5`` plus ``-report``."""
    out = Path(directory) if directory else Path(str(Path(results_path).with_suffix("")) + "-report")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"-o: the report is a directory, and this is a file (got '{out}')")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"-o: cannot create the report directory ({exc.strerror}) (got '{out}')") from None
    return out


def _add(report: Report, key: str, title: str, name: str, fig, caption: str) -> None:
    """Save ``fig`` as ``name.png`` in the report's directory and list it on the page."""
    from .common import save

    report.plots.append(Plot(key, title, save(fig, report.directory / f"{name}.png"), caption))


def _draw_evolution_and_pairs(report: Report, table, chosen, pairs_note: str, contour: bool) -> None:
    from .evolution import evolution_figure
    from .pairs import pair_figure

    _add(report, "evolution", "Result evolution", "evolution", evolution_figure(table),
         "Value of each trial by trial id; marker and colour by strategy; the black line is the best so far; "
         "red crosses on the bottom edge are failed trials.")
    if len(table.axes) < 2:
        report.notes.append("two-parameter plots: the space has fewer than two searched parameters")
        return
    _remove_stale_pairs(report.directory, {f"pair_{_file_name(x.name, y.name)}.png" for x, y in chosen})
    if pairs_note:
        report.notes.append(pairs_note)
    for ax_x, ax_y in chosen:
        _add(report, "pair", f"{ax_y.name} against {ax_x.name}", f"pair_{_file_name(ax_x.name, ax_y.name)}",
             pair_figure(table, ax_x, ax_y, contour),
             "Colour: value; stars: Bayesian trials; the red circle: best trial; grey crosses: failed; "
             "labels: trial ids" + ("; shading: interpolated value" if contour else "") + ".")


def _draw_the_rest(report: Report, table, ranking, now: float, stopping: dict | None = None) -> None:
    """Parallel coordinates, timeline, learning curves, importance and slices: each where the data allow it."""
    from .curves import curves_figure, has_curves, rungs_figure
    from .importance import MIN_TRIALS, importance_figure
    from .parallel import parallel_figure
    from .slices import has_slices, slices_figure
    from .timeline import timeline_figure

    if table.axes:
        _add(report, "parallel", "Parameter combinations", "parallel", parallel_figure(table),
             "One axis per parameter, then the value; each trial is a line coloured by its value, the best in red; "
             "dashed grey lines are failed trials.")
    _add(report, "timeline", "Worker timeline", "timeline", timeline_figure(table, now),
         "A lane per worker, a bar per trial coloured by status; dark segments: time spent choosing a Bayesian "
         "point; white: idle; right: share of the time spent in trials.")
    if has_curves(table):
        _add(report, "curves", "Learning curves", "curves", curves_figure(table),
             "What trials reported per epoch, a line per trial coloured by its final value; the best in red; "
             "trials the stopping rule stopped are faded, with a cross where they stopped.")
    else:
        report.notes.append("learning curves: no trial reported per-epoch metrics (trial.report or the Keras callback)")
    if stopping is not None:
        _add(report, "rungs", "Epochs per rung", "rungs", rungs_figure(stopping),
             "Epochs trained by the trials the stopping rule stopped at each rung, and by those that ran to the "
             "end; above each bar, how many trials.")
    if ranking:
        _add(report, "importance", "Parameter importance", "importance", importance_figure(table, ranking),
             "Share of the value's variance each parameter explains on its own (fANOVA over a random forest "
             "fitted to the successful trials); grey: what they explain only together.")
    else:
        report.notes.append(f"parameter importance: needs at least {MIN_TRIALS} successful trials "
                            f"(has {int(table.done.sum())})")
    if has_slices(table):
        _add(report, "slices", "Value against each parameter", "slices", slices_figure(table),
             "A panel per parameter; colour: trial id (dark early, bright late); red crosses: failed trials.")
    else:
        report.notes.append("value against each parameter: no trial has succeeded yet")


def _draw_pbt(report: Report, results) -> None:
    """The pbt page, for a file with pbt segments."""
    from ..pbt import pbt_summary, searched_names, segment_rows
    from .pbt import pbt_figure

    summary = pbt_summary(results)
    if summary is None:
        return
    log_names = {name for name, spec in results.space.items() if spec.get("log")}
    best = summary["best"]
    _add(report, "pbt", "Population Based Training", "pbt",
         pbt_figure(segment_rows(results.records()), searched_names(results), log_names, results.minimize,
                    None if best is None else best["trial_id"]),
         "Top: the values each member trained with, by epoch (a colour per member; dashed: an exploit, from the "
         "copied member's value to the explored one). Bottom: each member's score at the end of each segment. "
         "Black: the lineage of the best member, the schedule `best` prints.")


__all__ = ["Plot", "Report", "make_report", "parse_pairs"]
