"""A results file for other tools: ``hpc_hpo export`` (CSV, JSON), ``hpc_hpo best``, and :func:`load`."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._toml import toml_key, toml_value, tomllib
from ..results.reader import Results, best_row, params_of, read_results
from .pbt import lineage, schedule, schedule_text, searched_names, segment_rows

_FIRST = ["trial_id", "status", "value"]


def columns(results: Results) -> list[str]:
    """Trial id, status and value first, then parameters, metrics, and the bookkeeping columns."""
    params = [c for c in results.columns if c.startswith("param_")]
    metrics = [f"metric_{name}" for name in results.metric_names]
    rest = [c for c in results.columns if c not in _FIRST and c not in params]
    return _FIRST + params + metrics + rest


def _clean(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def to_csv(results: Results) -> str:
    out = io.StringIO()
    names = columns(results)
    writer = csv.DictWriter(out, fieldnames=names, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in results.records():
        writer.writerow({k: ("" if _clean(record[k]) is None else record[k]) for k in names})
    return out.getvalue()


def to_json(results: Results) -> str:
    names = columns(results)
    rows = [{k: _clean(record[k]) for k in names} for record in results.records()]
    return json.dumps(rows, indent=1, ensure_ascii=False) + "\n"


def export(results: Results, fmt: str) -> str:
    return to_csv(results) if fmt == "csv" else to_json(results)


def best_text(results: Results, fmt: str = "toml") -> str:
    """The best trial's parameters, as TOML lines to paste into an experiment or as a JSON object."""
    best = best_row(results)
    if best is None:
        return ""
    params = params_of(best, results.param_names)
    if int(best.get("member", -1)) >= 0:
        return _best_schedule_text(results, best, params, fmt)
    if fmt == "json":
        return json.dumps(params, indent=1) + "\n"
    direction = results.attrs.get("direction", "minimize")
    trained = f", {best['epochs']} epochs" if best.get("epochs") else ""
    lines = [f"# best of {results.path}: trial {best['trial_id']}, value {best['value']:.10g} ({direction}){trained}"]
    lines += [f"{toml_key(name)} = {toml_value(value)}" for name, value in params.items()]
    return "\n".join(lines) + "\n"


def _best_schedule_text(results: Results, best: dict[str, Any], params: dict[str, Any], fmt: str) -> str:
    """The best pbt segment: its member's schedule (values by epoch range, along its lineage), as TOML (the last
    values as keys, then one ``[[schedule]]`` table per range) or JSON (``params``, ``member``, ``schedule``)."""
    rows = {int(r["trial_id"]): r for r in segment_rows(results.records())}
    ranges = schedule(lineage(rows, int(best["trial_id"])), searched_names(results))
    if fmt == "json":
        return json.dumps({"params": params, "member": int(best["member"]), "trial_id": int(best["trial_id"]),
                           "value": float(best["value"]), "schedule": ranges}, indent=1) + "\n"
    direction = results.attrs.get("direction", "minimize")
    lines = [f"# best of {results.path}: trial {best['trial_id']}, value {best['value']:.10g} ({direction}), "
             f"member {best['member']} after {best['end_epoch']} epochs; the schedule it trained with:"]
    lines += [f"#   {line}" for line in schedule_text(ranges)]
    lines.append("# its last values:")
    lines += [f"{toml_key(name)} = {toml_value(value)}" for name, value in params.items()]
    for entry in ranges:
        lines += ["", "[[schedule]]", f"start_epoch = {entry['start_epoch']}", f"end_epoch = {entry['end_epoch']}"]
        lines += [f"{toml_key(name)} = {toml_value(value)}" for name, value in entry["params"].items()]
    return "\n".join(lines) + "\n"


@dataclass
class Loaded:
    """What :func:`load` returns: the trials, the experiment that made them, and the file's metadata."""

    trials: Any  # a pandas DataFrame, or without pandas a numpy structured array
    config: dict[str, Any]  # the resolved experiment, as the experiment file's tables
    metadata: dict[str, Any]  # the file's attributes: name, direction, seed, budget, versions, ...
    epochs: Any  # per-epoch metrics (trial_id, epoch, name, value, time), same kind as ``trials``
    runs: Any  # one row per job that wrote the file

    @property
    def done(self) -> Any:
        """The trials that succeeded."""
        return self.trials[self.trials["status"] == "done"]


def load(path: str | Path, pandas: bool | None = None) -> Loaded:
    """Read a results file (also while it is written) for analysis.

    ``trials`` has one row per trial, in trial id order, with the columns of ``hpc_hpo export``
    (``trial_id``, ``status``, ``value``, ``param_*``, ``metric_*``, then the bookkeeping ones),
    strings decoded. It is a pandas DataFrame when pandas is installed (``pip install
    hpc_hpo[pandas]``), else a numpy structured array; ``pandas=False`` asks for the array.
    """
    results = read_results(path)
    names = columns(results)
    records = results.records()
    use_pandas = _has_pandas() if pandas is None else pandas
    metadata = {k: v for k, v in results.attrs.items() if k != "config"}
    config = tomllib.loads(results.attrs.get("config", "")) if results.attrs.get("config") else {}
    epochs = _decoded(results.epochs)
    runs = _decoded(results.runs)
    if use_pandas:
        import pandas as pd

        trials = pd.DataFrame.from_records(records, columns=names)
        return Loaded(trials, config, metadata, pd.DataFrame(epochs), pd.DataFrame(runs))
    return Loaded(_structured(records, names), config, metadata, epochs, runs)


def _has_pandas() -> bool:
    try:
        import pandas  # noqa: F401
    except ImportError:
        return False
    return True


def _decoded(array: np.ndarray) -> np.ndarray:
    """Byte-string fields as str, so the array reads like the DataFrame."""
    if array.dtype.names is None:
        return array
    fields = [(n, f"U{max(1, array.dtype[n].itemsize)}") if array.dtype[n].kind == "S" else (n, array.dtype[n])
              for n in array.dtype.names]
    out = np.empty(array.shape, dtype=fields)
    for name in array.dtype.names:
        out[name] = np.char.decode(array[name], "utf-8", "replace") if array.dtype[name].kind == "S" else array[name]
    return out


def _structured(records: list[dict[str, Any]], names: list[str]) -> np.ndarray:
    def kind(values: list[Any]) -> Any:
        if all(isinstance(v, bool) for v in values):
            return "?"
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return "<i8"
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return "<f8"
        return f"U{max([1, *(len(str(v)) for v in values)])}"

    dtype = [(n, kind([r[n] for r in records]) if records else "<f8") for n in names]
    return np.array([tuple(r[n] for n in names) for r in records], dtype=dtype)
