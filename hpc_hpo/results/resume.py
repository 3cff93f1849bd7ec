"""Continue a results file: check it is ours and fits the experiment, recover it, restore the search.

A job can end anywhere: cleanly, at a signal, at its time limit, or by ``kill -9``. What a
killed job leaves is readable (SWMR keeps the file consistent) but HDF5 refuses to open it for
writing again (its status flags still say a writer has it open), and rows added by the last,
interrupted flush may be half written (a grown table with zeroed rows). So a file whose last
run did not close it (no ``/runs`` row, ``exit_code`` -1, or HDF5 refuses to reopen it) is
*recovered* before anything else: every complete row is read with a SWMR reader and copied
into a fresh file that atomically replaces the old one (``os.replace``; until then the old
file is untouched). No ``h5clear`` is needed.

Then :func:`previous_trials` turns the rows into what the scheduler restores: finished
trials (told to the strategies, counted in the budget) and the trials that were running when
the job died, run again first with the same parameters and the next ``attempt`` number.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .._toml import tomllib
from ..config import Config, parse_config
from ..errors import ConfigError, HpoError, ResultsWriteError, StoreError
from ..search.space import Space
from .layout import (
    DATASETS,
    LIBVER,
    READABLE_FORMATS,
    RESUMABLE_FORMATS,
    decode_attrs,
    make_layout,
    param_column,
    trial_dtype,
)
from .records import DONE, PRUNED, RUNNING, STATUSES, TrialRecord
from .writer import ResultsWriter, writing

log = logging.getLogger(__name__)

FINISHED = tuple(s.encode() for s in STATUSES if s != RUNNING)


@dataclass
class Previous:
    """What the results file holds before this job continues it."""

    trials: list[TrialRecord]  # finished (done, pruned, failed, timeout), in the order they were stored
    rerun: list[TrialRecord]  # running with a known point when the last job ended: run again first
    next_id: int  # the first trial id this job may use
    outside: int = 0  # finished trials whose point lies outside a changed (--force) space
    epochs: np.ndarray | None = None  # the /epochs rows: what trials reported while they ran

    def reports(self, metric: str) -> list[tuple[int, int, float]]:
        """(trial id, epoch, value) of ``metric`` as the finished trials reported it, in the order it came: what a
        stopping rule's rungs are rebuilt from. A trial that ran more than once counts its last attempt only;
        trials to run again are left out (they are judged afresh)."""
        if self.epochs is None or not len(self.epochs):
            return []
        started = {r.trial_id: r.t_start for r in self.trials}
        rows = self.epochs[self.epochs["name"] == metric.encode()]
        return [(int(row["trial_id"]), int(row["epoch"]), float(row["value"])) for row in rows
                if int(row["trial_id"]) in started and not row["time"] < started[int(row["trial_id"])]]


def open_for_resume(path: Path, config: Config, slots: int, force: bool, attrs: dict[str, Any] | None = None,
                    flush_interval: float = 0.1) -> tuple[ResultsWriter, Previous]:
    """Check, recover if needed, and open ``path`` to continue it; what it already holds."""
    stored, clean = inspect_file(path)
    changes = differences(stored, config)
    if changes and not force:
        raise ConfigError(f"--resume: {path} was made by a different experiment ({'; '.join(changes)}); "
                          f"use a new --results, or --force to continue anyway")
    if changes:
        with h5py.File(path, "r", swmr=True, locking=False) as file:
            have = file["trials"].dtype
        want = trial_dtype(config.space)
        params = [n for n in dict.fromkeys([*have.names, *want.names]) if n.startswith("param_")]
        differ = [n for n in params if n not in have.names or n not in want.names or have[n] != want[n]]
        if differ:
            raise ConfigError(f"--force: {path} stores other parameter columns ({', '.join(differ)}): parameters "
                              f"may change their range, not their name or type; use a new --results")
        log.warning("--force: continuing %s although %s", path, "; ".join(changes))
    if not clean or not _reopens(path):
        recover(path)
    with h5py.File(path, "r", swmr=True, locking=False) as file:
        previous = previous_trials(file, config.space)
    writer = ResultsWriter.open(path, config.space, slots, flush_interval, attrs=attrs, waiting=previous.rerun)
    if previous.outside:
        log.warning("%d earlier trials lie outside the changed space: kept in the file, not shown to the strategies",
                    previous.outside)
    return writer, previous


def inspect_file(path: Path) -> tuple[dict[str, Any], bool]:
    """The file's attributes, and whether its last run closed it; a clear error if it is not ours."""
    if not h5py.is_hdf5(path):
        raise StoreError(f"{path}: not an HDF5 file; hpc_hpo will not touch it (move it away or choose another "
                         f"--results)")
    try:
        with h5py.File(path, "r", swmr=True, locking=False) as file:
            attrs = decode_attrs(file)
            missing = [name for name in DATASETS if name not in file]
            for name in DATASETS:  # every byte a resume will read must be readable
                if name in file:
                    file[name][...]
            runs = file["runs"][:] if "runs" in file else np.zeros(0)
    except (OSError, RuntimeError) as exc:
        raise StoreError(f"{path}: cannot be read ({_reason(exc)}); the file is damaged (truncated or not fully "
                         f"copied?); hpc_hpo will not touch it") from None
    if "format_version" not in attrs or missing:
        what = "the format_version attribute" if "format_version" not in attrs else ", ".join(missing)
        raise StoreError(f"{path}: an HDF5 file but not an hpc_hpo results file (no {what}); hpc_hpo will not touch it")
    version = attrs["format_version"]
    if version not in RESUMABLE_FORMATS:
        readable = "it can still be read (status, export), but " if version in READABLE_FORMATS else ""
        raise StoreError(f"{path}: results format {version} cannot be resumed by this hpc_hpo (it resumes formats "
                         f"{', '.join(map(str, RESUMABLE_FORMATS))}); {readable}continue in a new --results file")
    # No run row at all: the job was killed between creating the file and its first flush.
    clean = len(runs) > 0 and int(runs[-1]["exit_code"]) != -1
    return attrs, clean


def stored_config(path: Path) -> Config | None:
    """The experiment stored in the results file at ``path`` (None if it cannot be read: the resume's own checks
    say why)."""
    try:
        attrs, _ = inspect_file(path)
        return parse_config(tomllib.loads(attrs.get("config", "")))
    except (HpoError, tomllib.TOMLDecodeError):
        return None


def _reopens(path: Path) -> bool:
    """Whether HDF5 opens the file for writing (not if a writer died while closing it)."""
    try:
        h5py.File(path, "r+", locking=False).close()
    except OSError:
        return False
    return True


def _reason(exc: OSError) -> str:
    text = str(exc)
    return text.split("(")[0].strip() if "(" in text else text


def differences(attrs: dict[str, Any], config: Config) -> list[str]:
    """What differs between the experiment that made the file and this one (empty: the same)."""
    e = config.experiment
    changes = []
    stored_space = json.loads(attrs.get("space", "{}"))
    space = config.space.describe()
    if stored_space != space:
        names = [n for n in dict.fromkeys([*stored_space, *space]) if stored_space.get(n) != space.get(n)]
        changes.append("space: " + ", ".join(f"{n} {stored_space.get(n, 'absent')} -> {space.get(n, 'absent')}"
                                             for n in names))
    for key, now in (("objective", e.objective), ("direction", e.direction)):
        if attrs.get(key) != now:
            changes.append(f"{key}: {attrs.get(key)!r} -> {now!r}")
    if e.seed >= 0 and attrs.get("seed") is not None and int(attrs["seed"]) != e.seed:
        changes.append(f"seed: {attrs['seed']} -> {e.seed}")
    try:
        stored_phases = [p["strategy"] for p in tomllib.loads(attrs.get("config", "")).get("phase", [])]
    except tomllib.TOMLDecodeError:
        stored_phases = []
    phases = [p.strategy for p in config.phases]
    if stored_phases and stored_phases != phases:
        changes.append(f"phases: {' + '.join(stored_phases)} -> {' + '.join(phases)}")
    return changes


def recover(path: Path) -> None:
    """Copy every complete row of a file its writer did not close into a fresh file, then replace it."""
    temporary = path.with_name(f".{path.name}.recovering")
    with h5py.File(path, "r", swmr=True, locking=False) as old:
        trials = old["trials"][:]
        keep = np.isin(trials["status"], FINISHED)  # a row of zeros was added but never written
        metrics = old["metrics"][:]
        names = old["metric_names"][:]
        running = old["running"][:]
        runs = old["runs"][:]
        epochs = old["epochs"][:]
        attrs = dict(old.attrs)
        space_dtype = old["trials"].dtype
    rows = np.flatnonzero(keep)
    metrics = metrics[rows[rows < len(metrics)]] if len(metrics) else np.zeros((0, len(names)))
    epochs = epochs[epochs["name"] != b""]
    for row in runs:
        if row["exit_code"] == -1:
            row["exit_code"] = -9  # did not close the file: killed, or its node died
    try:
        with writing(path), h5py.File(temporary, "w", libver=LIBVER) as new:
            block = np.full((int(keep.sum()), len(names)), np.nan)
            block[: len(metrics), : metrics.shape[1] if metrics.ndim == 2 else 0] = metrics
            make_layout(new, space_dtype, len(running), contents={"trials": trials[keep], "running": running,
                                                                   "metrics": block, "metric_names": names,
                                                                   "runs": runs, "epochs": epochs})
            new.attrs.update(attrs)
            new.flush()
            os.fsync(new.id.get_vfd_handle())
    except ResultsWriteError:
        temporary.unlink(missing_ok=True)  # the old file is untouched until the copy is complete
        raise
    os.replace(temporary, path)
    log.info("%s: recovered after an unclean end (%d finished trials kept, %d incomplete rows dropped)", path,
             int(keep.sum()), int((~keep).sum()))


def previous_trials(file: h5py.File, space: Space) -> Previous:
    """The finished trials and those to run again."""
    trials = file["trials"][:]
    running = file["running"][:]
    names = [n.decode() for n in file["metric_names"][:]]
    metrics = file["metrics"][:]
    finished, outside = [], 0
    for i, row in enumerate(trials):
        params = _params(row, space)
        if params is None:
            outside += 1
        values = metrics[i] if i < len(metrics) else ()
        record = _record(row, params)
        record = record._replace(metrics={n: float(v) for n, v in zip(names, values, strict=False) if not math.isnan(v)})
        finished.append(record)
    done_ids = {r.trial_id for r in finished}
    rerun = []
    for row in running[running["status"] == RUNNING.encode()]:
        if int(row["trial_id"]) in done_ids:
            continue  # stored, and its slot not yet freed when the job ended
        done_ids.add(int(row["trial_id"]))  # a trial to run again is listed once, even if a kill left it twice
        if row["strategy"] == b"bayes" and math.isnan(row["suggest_seconds"]):
            continue  # its worker was still choosing the point: the next Bayesian trial chooses afresh
        if row["strategy"] == b"pbt" and row["suggest_seconds"] < 0:
            continue  # a PB2 segment whose values were still being chosen: its member decides afresh
        params = _params(row, space)
        if params is not None:
            rerun.append(_record(row, params))
    ids = [int(r["trial_id"]) for r in trials] + [int(r["trial_id"]) for r in running if r["status"]]
    return Previous(finished, rerun, next_id=max(ids, default=-1) + 1, outside=outside, epochs=file["epochs"][:])


def _params(row: np.void, space: Space) -> dict | None:
    """The trial's point as the objective received it; None if it lies outside ``space``."""
    params = {}
    for param in space.params:
        value = row[param_column(param.name)]
        value = value.decode() if isinstance(value, bytes) else value.item()
        try:
            params[param.name] = param.check(value, param.name)
        except ConfigError:
            return None
    return params


def _record(row: np.void, params: dict | None) -> TrialRecord:
    def text(name: str) -> str:
        return row[name].decode("utf-8", "replace") if name in row.dtype.names else ""  # /running has no error

    status = text("status")
    return TrialRecord(
        trial_id=int(row["trial_id"]), status=status, params=params, phase=int(row["phase"]),
        strategy=text("strategy"), rank=int(row["rank"]), host=text("host"), t_submit=float(row["t_submit"]),
        t_start=float(row["t_start"]), t_end=float(row["t_end"]),
        value=float(row["value"]) if status in (DONE, PRUNED) else None, error=text("error"), repeat=int(row["repeat"]),
        attempt=int(row["attempt"]), group=int(row["group"]), suggest_seconds=float(row["suggest_seconds"]),
        gpus=text("gpus"), memory_mb=float(row["memory_mb"]), epochs=int(row["epochs"]), member=int(row["member"]),
        parent=int(row["parent"]), start_epoch=int(row["start_epoch"]), end_epoch=int(row["end_epoch"]),
        checkpoint_mb=float(row["checkpoint_mb"]),
    )
