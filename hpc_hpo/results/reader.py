"""Reading a results file: finished and running trials at one moment, also while its job writes it (SWMR)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .._version import __version__
from ..errors import StoreError
from .layout import READABLE_FORMATS, decode_attrs, param_column
from .records import RUNNING


@dataclass
class Results:
    """What a results file holds, read at one moment (running trials included)."""

    path: Path
    attrs: dict[str, Any]
    space: dict[str, dict[str, Any]]
    trials: np.ndarray              # /trials rows then the occupied /running slots
    metric_names: list[str]
    metrics: np.ndarray             # (len(trials), len(metric_names)), NaN where absent
    runs: np.ndarray
    epochs: np.ndarray              # /epochs rows: trial_id, epoch, name, value, time
    finished_rows: int = 0          # how many of ``trials`` come from /trials
    columns: list[str] = field(default_factory=list)

    @property
    def minimize(self) -> bool:
        return self.attrs.get("direction", "minimize") == "minimize"

    @property
    def param_names(self) -> list[str]:
        return list(self.space)

    def records(self) -> list[dict[str, Any]]:
        """Every trial as a plain dict (strings decoded), sorted by trial id."""
        rows = []
        for i, row in enumerate(self.trials):
            record: dict[str, Any] = {}
            for name in self.trials.dtype.names:
                value = row[name]
                if isinstance(value, bytes):
                    value = value.decode("utf-8", "replace")
                elif isinstance(value, np.generic):
                    value = value.item()
                record[name] = value
            for j, name in enumerate(self.metric_names):
                record[f"metric_{name}"] = float(self.metrics[i, j])
            rows.append(record)
        rows.sort(key=lambda r: r["trial_id"])
        return rows


def open_for_read(path: str | Path) -> h5py.File:
    """Open a results file read-only; works while the master is writing it (SWMR)."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: no such results file")
    last: Exception | None = None
    for _ in range(20):  # the master may be creating the file right now
        try:
            return h5py.File(path, "r", swmr=True, locking="best-effort")
        except OSError as exc:
            last = exc
            time.sleep(0.1)
    raise StoreError(f"{path}: cannot open the results file ({last})")


def read_results(path: str | Path) -> Results:
    """Read a results file, finished and running trials, at this moment."""
    with open_for_read(path) as file:
        try:
            attrs = decode_attrs(file)
            version = attrs.get("format_version")
            if version not in READABLE_FORMATS:
                raise StoreError(f"{path}: results format {version!r} is not supported by hpc_hpo {__version__} "
                                 f"(it reads formats {', '.join(map(str, READABLE_FORMATS))})")
            # /runs first: the writer flushes every row before it marks its run ended, so a reader that sees the
            # run ended sees every trial of it (read after /trials, a run could look ended with its last trial
            # missing: `status --watch` stopped on "29 of 30 finished").
            runs = file["runs"][:]
            finished = file["trials"][:]
            running = file["running"][:]
            running = running[running["status"] == RUNNING.encode()]
            names = [n.decode() for n in file["metric_names"][:]]
            stored = np.full((len(finished), len(names)), np.nan)
            block = file["metrics"][: len(finished), :]
            # Each dataset is read at its own moment while the master writes: /metrics may already have a
            # column (or rows) that /metric_names or /trials do not show yet. Keep what both show.
            rows, columns = min(block.shape[0], len(finished)), min(block.shape[1], len(names))
            stored[:rows, :columns] = block[:rows, :columns]
            # Rows a killed or failed write added but never filled (status "") are not trials.
            written = finished["status"] != b""
            finished, stored = finished[written], stored[written]
            metrics = np.full((len(finished) + len(running), len(names)), np.nan)
            metrics[: len(finished)] = stored
            epochs = file["epochs"][:]
        except KeyError as exc:
            raise StoreError(f"{path}: not an hpc_hpo results file (missing {exc})") from None
    # A trial can be seen both finished and still in its running slot between two flushes.
    running = running[~np.isin(running["trial_id"], finished["trial_id"])]
    metrics = metrics[: len(finished) + len(running)]
    trials = np.concatenate([finished, _as_trial_rows(running, finished.dtype)]) if len(running) else finished
    return Results(
        path=Path(path), attrs=attrs, space=json.loads(attrs.get("space", "{}")), trials=trials,
        metric_names=names, metrics=metrics, runs=runs, epochs=epochs, finished_rows=len(finished),
        columns=list(trials.dtype.names),
    )


def best_row(results: Results) -> dict[str, Any] | None:
    """The best finished trial as a record dict, or None if none succeeded."""
    done = [r for r in results.records() if r["status"] == "done"]
    if not done:
        return None
    key = (lambda r: r["value"]) if results.minimize else (lambda r: -r["value"])
    return min(done, key=key)


def params_of(record: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    return {name: record[param_column(name)] for name in names}


def _as_trial_rows(running: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """/running rows with the columns of /trials rows (format 6 keeps no ``error`` there: it is empty)."""
    if running.dtype == dtype:
        return running
    rows = np.zeros(len(running), dtype)
    for name in running.dtype.names:
        rows[name] = running[name]
    return rows
