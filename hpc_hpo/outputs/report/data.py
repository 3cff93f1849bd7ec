"""The trials of a results file as columns the plots read: one array per field, in trial id order.

Built once from :class:`hpc_hpo.results.reader.Results`, so every plot sees the same snapshot of a
file that may still be written. Parameters keep their type: ``numeric`` puts any parameter
on a number line (a categorical as the index of its choice), ``unit`` on [0, 1] as the
search space sees it (log parameters in log space).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...results.layout import param_column
from ...results.reader import Results
from ...results.records import DONE, PRUNED, RUNNING
from ..summary import MAYBE_RUNNING, RUNNING_NOW, run_state


@dataclass(frozen=True)
class Axis:
    """One searched parameter as a plot axis."""

    name: str
    type: str  # float, int, categorical
    log: bool = False
    low: float = 0.0
    high: float = 1.0
    choices: tuple[Any, ...] = ()

    @property
    def categorical(self) -> bool:
        return self.type == "categorical"

    def label(self) -> str:
        return f"{self.name} (log)" if self.log else self.name


@dataclass
class TrialTable:
    """Every trial of one file, column by column (finished and running), sorted by trial id."""

    path: str
    name: str
    minimize: bool
    budget: int
    run_state: str  # of the last run, as hpc_hpo.outputs.summary.run_state says: running, killed, ended, ...
    trial_id: np.ndarray
    status: np.ndarray
    value: np.ndarray
    strategy: np.ndarray
    phase: np.ndarray
    rank: np.ndarray
    host: np.ndarray
    gpus: np.ndarray
    t_submit: np.ndarray
    t_start: np.ndarray  # NaN while running: the worker reports it with the result
    t_end: np.ndarray
    suggest_seconds: np.ndarray
    error: np.ndarray
    params: dict[str, np.ndarray]
    axes: list[Axis]
    fixed: dict[str, Any]
    metrics: dict[str, np.ndarray]
    epochs: np.ndarray
    runs: np.ndarray
    counts: Counter = field(default_factory=Counter)

    @property
    def running_now(self) -> bool:
        """The search was still going when the file was read (or nothing tells that it was not)."""
        return self.run_state in (RUNNING_NOW, MAYBE_RUNNING)

    def __len__(self) -> int:
        return len(self.trial_id)

    @property
    def done(self) -> np.ndarray:
        """Mask of the trials that succeeded (a finite value)."""
        return (self.status == DONE) & np.isfinite(self.value)

    @property
    def unsuccessful(self) -> np.ndarray:
        """Mask of the trials that ended without a value: failed or timed out."""
        return (self.status != DONE) & (self.status != RUNNING) & (self.status != PRUNED)

    @property
    def pruned(self) -> np.ndarray:
        """Mask of the trials the stopping rule stopped early (their value is an early one: not compared)."""
        return self.status == PRUNED

    @property
    def running(self) -> np.ndarray:
        return self.status == RUNNING

    def best_index(self) -> int | None:
        """Row of the best successful trial (the earliest among equals), or None."""
        done = np.flatnonzero(self.done)
        if not len(done):
            return None
        values = self.value[done]
        return int(done[np.argmin(values) if self.minimize else np.argmax(values)])

    def best_so_far(self) -> np.ndarray:
        """Best value among successful trials up to each row (NaN before the first)."""
        values = np.where(self.done, self.value, np.inf if self.minimize else -np.inf)
        best = np.minimum.accumulate(values) if self.minimize else np.maximum.accumulate(values)
        return np.where(np.isfinite(best), best, np.nan)

    def numeric(self, axis: Axis) -> np.ndarray:
        """The parameter as numbers: its value, or for a categorical the index of its choice (NaN if unset)."""
        column = self.params[axis.name]
        if axis.categorical:
            index = {str(c): i for i, c in enumerate(axis.choices)}
            return np.array([index.get(str(v), np.nan) for v in column], dtype=float)
        return column.astype(float)

    def unit(self, axis: Axis) -> np.ndarray:
        """The parameter on [0, 1] as the search space sees it (log axes in log space)."""
        x = self.numeric(axis)
        if axis.categorical:
            return x / max(1, len(axis.choices) - 1)
        low, high = axis.low, axis.high
        if axis.log:
            with np.errstate(divide="ignore", invalid="ignore"):
                x, low, high = np.log(x), math.log(low), math.log(high)
        return (x - low) / (high - low) if high > low else np.full_like(x, 0.5)

    def has_point(self) -> np.ndarray:
        """Mask of the trials whose parameters are known (a Bayesian trial still choosing has none)."""
        mask = np.ones(len(self), dtype=bool)
        for axis in self.axes:
            mask &= np.isfinite(self.numeric(axis))
        return mask


def _axes(space: dict[str, dict[str, Any]]) -> tuple[list[Axis], dict[str, Any]]:
    axes, fixed = [], {}
    for name, spec in space.items():
        kind = spec.get("type")
        if kind == "fixed":
            fixed[name] = spec.get("value")
        elif kind == "categorical":
            axes.append(Axis(name, "categorical", choices=tuple(spec.get("choices", ()))))
        else:
            axes.append(Axis(name, kind, bool(spec.get("log")), float(spec["low"]), float(spec["high"])))
    return axes, fixed


def trial_table(results: Results) -> TrialTable:
    """Column arrays of every trial in ``results``, sorted by trial id."""
    records = results.records()
    axes, fixed = _axes(results.space)

    def column(name: str, dtype: Any = object) -> np.ndarray:
        return np.array([r[name] for r in records], dtype=dtype)

    def floats(name: str) -> np.ndarray:
        return column(name, float)

    params: dict[str, np.ndarray] = {}
    for axis in axes:
        values = [r[param_column(axis.name)] for r in records]
        if axis.categorical:
            params[axis.name] = np.array(values, dtype=object)
        else:
            # An unchosen Bayesian point is stored as 0 in /running: not a point yet.
            unchosen = [r["status"] == RUNNING and r["strategy"] == "bayes" and not math.isfinite(r["suggest_seconds"])
                        for r in records]
            params[axis.name] = np.array([math.nan if u else v for v, u in zip(values, unchosen, strict=True)],
                                         dtype=float)
    metrics = {name: floats(f"metric_{name}") for name in results.metric_names}
    epochs = results.epochs
    if epochs.dtype.names and len(epochs):
        epochs = np.array([(int(e["trial_id"]), int(e["epoch"]), e["name"].decode("utf-8", "replace"),
                            float(e["value"]), float(e["time"])) for e in epochs],
                          dtype=[("trial_id", "<i8"), ("epoch", "<i4"), ("name", object), ("value", "<f8"),
                                 ("time", "<f8")])
    status = column("status", object)
    return TrialTable(
        path=str(results.path), name=str(results.attrs.get("name", results.path.stem)), minimize=results.minimize,
        budget=int(results.attrs.get("budget", 0)), run_state=run_state(results),
        trial_id=column("trial_id", np.int64),
        status=status,
        value=floats("value"),
        strategy=column("strategy", object),
        phase=column("phase", np.int64),
        rank=column("rank", np.int64),
        host=column("host", object),
        gpus=column("gpus", object),
        t_submit=floats("t_submit"), t_start=floats("t_start"), t_end=floats("t_end"),
        suggest_seconds=floats("suggest_seconds"),
        error=column("error", object),
        params=params, axes=axes, fixed=fixed, metrics=metrics, epochs=epochs, runs=results.runs,
        counts=Counter(str(s) for s in status),
    )
