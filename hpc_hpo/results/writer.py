"""The master's handle on the results file: buffered rows, flushed when idle or at least every flush interval.

Only the master writes, through :class:`ResultsWriter`. The file is switched to SWMR mode
once created, so anyone can read it during the run with ``h5py.File(path, "r", swmr=True)``.
A new file is built under a temporary name and renamed once complete, so the results path
never holds a half-made file. Resuming (and recovering a file whose writer was killed) is
:mod:`hpc_hpo.results.resume`. A result counts as stored once flushed; every failed write is a
:class:`hpc_hpo.errors.ResultsWriteError` (:func:`writing`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import operator
import os
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from h5py import h5s, h5t

from .._version import __version__
from ..errors import ResultsWriteError, StoreError
from ..search.space import FloatParam, IntParam, Param, Space
from .layout import (
    EPOCHS_DTYPE,
    ERROR_BYTES,
    FORMAT_VERSION,
    HOST_BYTES,
    LIBVER,
    NAME_BYTES,
    fit_bytes,
    make_layout,
    trial_dtype,
)
from .records import TrialRecord

log = logging.getLogger(__name__)

#: /running: a flush that changed more than one slot in this many writes the span of rows from the first changed
#: to the last at once, instead of only those rows (measured at 16,384 slots: 20-35 us a row, 14 ms the span).
SPAN_WRITE_ABOVE = 32
#: The most of the master's time that writing /running may take under load: after a write of /running that took
#: t seconds, a flush under load leaves it as it is until t / RUNNING_TIME_SHARE seconds after that write began.
#: With thousands of workers and a master busy all the time a flush finds most slots changed, and rewriting
#: them all at every flush (14 ms for 16,384 slots) made the cost of a result grow with the number of workers;
#: with fewer than a few hundred workers a write takes well under a millisecond and nothing waits. 2%: at 16,384
#: workers a rewrite of every slot takes 85-90 ms, so /running is then up to 4.5 s old (1.8 s at 5%, which cost
#: 0.8 us more a result there); a trial handed out since the last write and lost to a kill has its point proposed
#: again on resume (:meth:`hpc_hpo.run.scheduler.Scheduler.restore`), so a lagging /running loses nothing.
RUNNING_TIME_SHARE = 0.02


class ResultsWriter:
    """The master's handle on the results file. Nothing else writes it during a run."""

    def __init__(self, file: h5py.File, space: Space, slots: int, flush_interval: float = 0.1):
        self.file = file
        self.path = Path(file.filename)  # create() corrects it: HDF5 keeps the name a file was made under
        self.space = space
        self.dtype = file["trials"].dtype
        self.flush_interval = flush_interval
        self._trials = file["trials"]
        self._running_ds = file["running"]
        self._metrics = file["metrics"]
        self._metric_names_ds = file["metric_names"]
        self._runs = file["runs"]
        self._epochs = file["epochs"]
        self._epoch_rows: list[tuple] = []
        self.metric_names: list[str] = [n.decode() for n in self._metric_names_ds[:]]
        self._metric_index = {name: i for i, name in enumerate(self.metric_names)}
        self._encoders = [(p.name, _encoder(p)) for p in space.params]
        #: A point's values in column order, as a tuple, when no column needs them encoded (numbers only).
        self._values = None if any(encode for _, encode in self._encoders) else _getter([p.name for p in space.params])
        self._unchosen = tuple(b"" if encode is not None else 0 for _, encode in self._encoders)
        self._bytes: dict[tuple[str, int], bytes] = {}  # host, strategy and status strings, encoded once
        self._gpus_bytes = self.dtype["gpus"].itemsize  # 32 in files made before GPU ids were kept whole
        #: Finished trials not yet written, as /trials rows: encoded when they come, while the master has just read
        #: their records (at a flush, thousands of records made long before would be read again, from memory).
        #: Kept from flush to flush, as large as the most rows a flush has written.
        self._queue = np.empty(0, dtype=self.dtype)
        self._queued = 0
        self._row_metrics: list[dict[str, float]] = []
        self._slots: list[TrialRecord | None] = [None] * slots
        self._waiting: list[TrialRecord] = []  # trials to run again that no worker has yet: kept after the slots
        #: /running as last written (slots, then the waiting trials), and the slots changed since: a flush encodes
        #: and writes only those, so its cost follows the results since the last flush, not the number of workers.
        self._running_dtype = self._running_ds.dtype  # no error column (format 5: as wide as a /trials row)
        self._running_error = "error" in self._running_dtype.names
        #: The HDF5 memory types of a /trials and a /running row, made once: h5py makes one per write from the numpy
        #: type, 0.33 ms for a row of 30 columns, most of what writing one row costs.
        self._trials_type = h5t.py_create(self.dtype)
        self._running_type = h5t.py_create(self._running_dtype)
        self._running_rows = np.zeros(slots, dtype=self._running_dtype)
        self._free_row = np.zeros((), dtype=self._running_dtype).item()  # every field zero, status b"": a free slot
        #: A flag per slot (a bytearray: at thousands of slots a set's table of them no longer stays in the caches).
        self._changed = bytearray(b"\x01" * slots)
        self._waiting_dirty = True
        self._running_dirty = True
        self._dirty_since: float | None = None
        self._running_next = 0.0  # monotonic time before which a flush under load leaves /running as it is
        self.run_index = -1
        self._run_clocks = (math.nan, math.nan)  # monotonic and CPU time at start_run
        self.failed = False  # a write failed: HDF5's own clean-up may crash, the process must skip it

    # -- creating ------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, space: Space, attrs: dict[str, Any], slots: int,
               overwrite: bool = False, flush_interval: float = 0.1, gpu_labels: Iterable[str] = ()) -> ResultsWriter:
        """Create the file with its layout and attributes, switch it to SWMR mode, then give it its name.

        It is built as ``.NAME.creating``, beside ``path``, and renamed only when complete: a job
        killed while creating it leaves no file a resume would stumble on. ``gpu_labels`` (what the
        ``gpus`` column will hold in this job) widen that column if any is longer than usual.
        """
        path = Path(path)
        if path.exists() and not overwrite:
            raise StoreError(f"{path}: cannot create the results file (it already exists)")
        temporary = path.with_name(f".{path.name}.creating")
        file = _open_hdf5(temporary, "w", path, "cannot create the results file")
        try:
            with writing(path):
                widest = max((len(label.encode()) for label in gpu_labels), default=0)
                make_layout(file, trial_dtype(space, widest), slots)
                file.attrs.update({
                    "format_version": FORMAT_VERSION,
                    "hpc_hpo_version": __version__,
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "space": json.dumps(space.describe()),
                    **attrs,
                })
                file.swmr_mode = True
                file.flush()
        except ResultsWriteError:
            with contextlib.suppress(Exception):
                file.close()
            temporary.unlink(missing_ok=True)  # never renamed: the results path was not touched
            raise
        temporary.replace(path)  # an open HDF5 file may be renamed: it is written through its descriptor
        writer = cls(file, space, slots, flush_interval)
        writer.path = path
        return writer

    @classmethod
    def open(cls, path: str | Path, space: Space, slots: int, flush_interval: float = 0.1,
             attrs: dict[str, Any] | None = None, waiting: Iterable[TrialRecord] = ()) -> ResultsWriter:
        """Continue an existing results file (see :mod:`hpc_hpo.results.resume`); running slots start free.

        ``waiting`` (the trials to run again) are written back into /running, after the slots,
        in the same write that frees the slots, and flushed before this returns: a job killed
        at any later moment leaves them there for the next resume. ``attrs`` (a raised budget,
        the config as now resolved) replace the stored ones; the experiment's identity (space,
        objective, direction) was checked before.
        """
        file = _open_hdf5(path, "r+", path, "cannot open the results file for writing")
        writer = cls(file, space, slots, flush_interval)
        writer._waiting = list(waiting)
        try:
            with writing(writer.path):
                # Until swmr_mode is on, a kill leaves a file that HDF5 opens for nobody (not even a SWMR
                # reader) without h5clear: so only the attributes, which SWMR cannot change, come first.
                for key, value in (attrs or {}).items():
                    if key not in ("space", "created", "format_version"):
                        file.attrs[key] = value
                file.attrs["hpc_hpo_version"] = __version__
                file.flush()
                file.swmr_mode = True
                writer._write_running()
                file.flush()
        except ResultsWriteError:
            writer.abandon()
            raise
        return writer

    def start_run(self, world_size: int, workers: int, host: str) -> None:
        """Add this run's row to /runs; :meth:`close` completes it."""
        n = self._runs.shape[0]
        row = np.zeros(1, dtype=self._runs.dtype)  # a resumed file of format 5 keeps its columns
        values = {"run": n, "hpc_hpo_version": __version__.encode(), "t_start": time.time(), "t_end": math.nan,
                  "world_size": world_size, "workers": workers, "master_host": fit_bytes(host, HOST_BYTES),
                  "trials": 0, "exit_code": -1, "loop_seconds": math.nan, "master_cpu_seconds": math.nan,
                  "master_wait_cpu_seconds": math.nan}
        for name in row.dtype.names:
            row[name] = values[name]
        with writing(self.path):
            self._runs.resize((n + 1,))
            self._runs[n] = row[0]
        self.run_index = n
        self._run_clocks = (time.monotonic(), time.process_time())
        self.flush()

    # -- writing -------------------------------------------------------------------------

    def _text(self, text: str, size: int) -> bytes:
        encoded = self._bytes.get((text, size))
        if encoded is None:
            encoded = self._bytes[text, size] = fit_bytes(text, size)
        return encoded

    def _row(self, record: TrialRecord, error: bool = True) -> tuple:
        """The record as a /trials row; without ``error``, as a /running row of format 6. (Runs of fields that
        keep their order are taken as slices: a row of 30 columns is built at every result and every flush.)"""
        params = record.params
        if params is None:  # a worker is still choosing this Bayesian trial's point
            values = self._unchosen
        elif self._values is not None:
            values = self._values(params)
        else:
            values = [params[name] if encode is None else encode(params[name]) for name, encode in self._encoders]
        text = self._text
        value = record.value
        return (
            record.trial_id, text(record.status, 10), math.nan if value is None else value,
            record.phase, text(record.strategy, 16), record.rank, text(record.host, HOST_BYTES),
            *record[_TIMES], *record[_REPEATS], self._gpus(record.gpus), *record[_TAIL],
            *((fit_bytes(record.error, ERROR_BYTES) if record.error else b"",) if error else ()), *values,
        )

    def _gpus(self, label: str) -> bytes:
        encoded = self._bytes.get((label, -1))
        if encoded is None:
            if len(label.encode()) > self._gpus_bytes:
                log.warning("%s stores GPU ids in %d bytes (a file from an older hpc_hpo): '%s' is cut short; a new "
                            "results file keeps them whole", self.path, self._gpus_bytes, label)
            encoded = self._bytes[label, -1] = fit_bytes(label, self._gpus_bytes)
        return encoded

    def _touch(self) -> None:
        if self._dirty_since is None:
            self._dirty_since = time.monotonic()

    def append(self, record: TrialRecord) -> None:
        """Queue a finished trial for /trials (written at the next flush)."""
        n = self._queued
        if n == len(self._queue):
            grown = np.empty(max(64, 2 * n), dtype=self.dtype)
            grown[:n] = self._queue
            self._queue = grown
        self._queue[n] = self._row(record)
        self._queued = n + 1
        self._row_metrics.append(record.metrics)
        self._touch()

    def append_epoch(self, trial_id: int, epoch: int, metrics: dict[str, float], when: float) -> None:
        """Queue the metrics a running trial reported for one epoch (written at the next flush)."""
        for name, value in metrics.items():
            self._epoch_rows.append((trial_id, epoch, self._text(name, NAME_BYTES), value, when))
        self._touch()

    def set_running(self, slot: int, record: TrialRecord | None) -> None:
        """Show ``record`` as running in ``slot`` (one slot per worker), or free the slot."""
        self._slots[slot] = record  # encoded at the flush: only the last state of a slot is written
        self._changed[slot] = 1
        self._running_dirty = True
        self._touch()

    def set_waiting(self, records: list[TrialRecord]) -> None:
        """Keep these trials (to run again, not yet handed out) in /running, after the workers' slots.

        A job killed before it handed them out leaves them there for the next resume.
        """
        self._waiting = list(records)
        self._waiting_dirty = True
        self._running_dirty = True
        self._touch()

    @property
    def dirty(self) -> bool:
        return self._dirty_since is not None

    def due(self, idle: bool) -> bool:
        """Whether to flush now: when idle, or when the oldest unwritten change is too old; but not while the only
        changes are running slots that a flush under load would hold back (see :meth:`flush`)."""
        if self._dirty_since is None:
            return False
        now = time.monotonic()
        if not (idle or now - self._dirty_since >= self.flush_interval):
            return False
        return bool(self._queued or self._epoch_rows or self._waiting_dirty) or now >= self._running_next

    def flush(self, under_load: bool = False) -> None:
        """Write what is queued and make it visible to readers; :class:`ResultsWriteError` if the disk refuses.

        ``under_load`` (the master's flushes when they fall due): the running slots are written only if that keeps
        /running within :data:`RUNNING_TIME_SHARE` of the time since its last write began; else they wait for a
        later flush (finished trials never wait: /trials is written at every flush). Readers and a resume already
        skip a running slot whose trial is in /trials.
        """
        with writing(self.path):
            self._flush(under_load)

    def _flush(self, under_load: bool) -> None:
        if self._queued:
            n0 = self._trials.shape[0]
            n1 = n0 + self._queued
            self._trials.resize((n1,))
            _write_span(self._trials, n0, self._queue[:self._queued], self._trials_type)
            self._write_metrics(n0, n1)
            self._queued = 0
            self._row_metrics.clear()
        if self._epoch_rows:
            n0 = self._epochs.shape[0]
            self._epochs.resize((n0 + len(self._epoch_rows),))
            self._epochs[n0:] = np.array(self._epoch_rows, dtype=EPOCHS_DTYPE)
            self._epoch_rows.clear()
        held = under_load and self._running_dirty and not self._waiting_dirty and time.monotonic() < self._running_next
        if self._running_dirty and not held:
            self._write_running()
        self.file.flush()
        self._dirty_since = time.monotonic() if held else None

    def _write_running(self) -> None:
        """/running: a slot per worker, then the trials waiting to run again; never smaller than it was (SWMR cannot
        shrink a dataset; and a shrink before the write could lose rows at a kill).

        Only the slots changed since the last write are encoded and written: one write of those rows (HDF5 spends
        20-35 us a row on it), or, when more than one slot in SPAN_WRITE_ABOVE changed (or the waiting trials did),
        one write of the rows from the first changed one on. With thousands of workers a flush writes what
        changed, not every slot. Its time (encoding and writing) sets when a flush under load may write /running
        again (:data:`RUNNING_TIME_SHARE`): a slot that changes several times meanwhile is encoded once.
        """
        began = time.monotonic()
        slots = len(self._slots)
        rows = self._running_rows
        changed = np.flatnonzero(np.frombuffer(self._changed, dtype=np.uint8)).tolist()
        if changed:  # encoded together: one conversion of the changed rows, not one per row
            records, row, error, free = self._slots, self._row, self._running_error, self._free_row
            rows[changed] = np.array([free if records[slot] is None else row(records[slot], error) for slot in changed],
                                     dtype=self._running_dtype)
        if self._waiting_dirty:
            size = max(slots + len(self._waiting), self._running_ds.shape[0])
            tail = np.zeros(size - slots, dtype=self._running_dtype)  # status b"": a free slot
            for i, record in enumerate(self._waiting):
                tail[i] = self._row(record, self._running_error)
            rows = self._running_rows = np.concatenate([rows[:slots], tail])
            if self._running_ds.shape[0] != size:
                self._running_ds.resize((size,))
            first = changed[0] if changed else slots
            _write_span(self._running_ds, first, rows[first:size], self._running_type)
        elif len(changed) * SPAN_WRITE_ABOVE > slots:  # many: one write from the first to the last is cheaper
            first, last = changed[0], changed[-1] + 1
            _write_span(self._running_ds, first, rows[first:last], self._running_type)
        elif changed:
            _write_rows(self._running_ds, changed, rows, self._running_type)
        self._running_next = began + (time.monotonic() - began) / RUNNING_TIME_SHARE
        self._changed = bytearray(slots)
        self._waiting_dirty = False
        self._running_dirty = False

    def _write_metrics(self, n0: int, n1: int) -> None:
        new = [name for m in self._row_metrics for name in m if name not in self._metric_index]
        for name in dict.fromkeys(new):
            self._metric_index[name] = len(self.metric_names)
            self.metric_names.append(name)
        k = len(self.metric_names)
        if k == 0:
            return
        if len(self.metric_names) != self._metric_names_ds.shape[0]:
            self._metric_names_ds.resize((k,))
            self._metric_names_ds[:] = np.array([n.encode()[:NAME_BYTES] for n in self.metric_names])
        if not any(self._row_metrics) and self._metrics.shape[1] == k:
            self._metrics.resize((n1, k))  # rows of NaN (the fill value)
            return
        block = np.full((n1 - n0, k), np.nan)
        for i, metrics in enumerate(self._row_metrics):
            for name, value in metrics.items():
                block[i, self._metric_index[name]] = value
        self._metrics.resize((n1, k))
        self._metrics[n0:n1, :] = block

    def close(self, exit_code: int, trials: int, wait_cpu: float = math.nan) -> None:
        """Flush, complete this run's row in /runs, and close the file (once: later calls do nothing).

        The row's ``loop_seconds`` and ``master_cpu_seconds`` run from :meth:`start_run` until every
        row was written; ``master_wait_cpu_seconds`` is ``wait_cpu``, the part of that CPU time the
        master spent looking for messages that had not come. A failed write, the last flush or HDF5's
        own writes while closing, raises :class:`ResultsWriteError`.
        """
        if not self.file.id.valid:
            return
        try:
            self.flush()  # every row first: a reader that sees the run ended sees all it wrote
            if self.run_index >= 0:
                with writing(self.path):
                    row = self._runs[self.run_index]
                    row["t_end"], row["exit_code"], row["trials"] = time.time(), exit_code, trials
                    row["loop_seconds"] = time.monotonic() - self._run_clocks[0]
                    row["master_cpu_seconds"] = time.process_time() - self._run_clocks[1]
                    if "master_wait_cpu_seconds" in row.dtype.names:
                        row["master_wait_cpu_seconds"] = wait_cpu
                    self._runs[self.run_index] = row
                    self.file.flush()
        except ResultsWriteError:
            self.abandon()
            raise
        try:
            with writing(self.path):
                self.file.close()
        except ResultsWriteError:
            self.failed = True
            raise

    def abandon(self) -> None:
        """Close the file after a failed write, as far as HDF5 still can; what was flushed before is safe."""
        self.failed = True
        with contextlib.suppress(Exception):
            self.file.close()


def _getter(names: list[str]):
    """A function giving the values of ``names`` in a point, as a tuple, in one call."""
    if len(names) == 1:
        return lambda params, name=names[0]: (params[name],)
    return operator.itemgetter(*names) if names else (lambda params: ())


def _fields(first: str, last: str) -> slice:
    """The TrialRecord fields from ``first`` to ``last``, which a row takes in the same order."""
    fields = TrialRecord._fields
    return slice(fields.index(first), fields.index(last) + 1)


_TIMES = _fields("t_submit", "t_end")
_REPEATS = _fields("repeat", "suggest_seconds")
_TAIL = _fields("memory_mb", "checkpoint_mb")


def _write_span(dataset: h5py.Dataset, start: int, rows: np.ndarray, mtype: h5t.TypeID) -> None:
    """``dataset[start:start + len(rows)] = rows`` with a memory type made beforehand."""
    if not len(rows):
        return
    selection = dataset.id.get_space()
    selection.select_hyperslab((start,), (len(rows),))
    dataset.id.write(h5s.create_simple((len(rows),)), selection, np.ascontiguousarray(rows), mtype=mtype)


def _write_rows(dataset: h5py.Dataset, indices: list[int], rows: np.ndarray, mtype: h5t.TypeID) -> None:
    """``dataset[i] = rows[i]`` for the sorted ``indices``, in one write: HDF5 touches only their chunks, and
    the selection costs microseconds a row (h5py's own fancy indexing costs several times more)."""
    selection = dataset.id.get_space()
    selection.select_none()
    for start, count in _runs(indices):
        selection.select_hyperslab((start,), (count,), op=h5s.SELECT_OR)
    dataset.id.write(h5s.create_simple((len(indices),)), selection, np.ascontiguousarray(rows[indices]), mtype=mtype)


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """The sorted ``indices`` as (start, count) runs of consecutive numbers."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1][1] += 1
        else:
            runs.append([i, 1])
    return [(start, count) for start, count in runs]


def _open_hdf5(where: str | Path, mode: str, path: str | Path, failing: str) -> h5py.File:
    """Open ``where`` for writing; a full disk is a :class:`ResultsWriteError` (resumable), anything else bad input."""
    try:
        return h5py.File(where, mode, libver=LIBVER, locking="best-effort")
    except (OSError, ValueError) as exc:
        if _disk_full(exc):
            raise ResultsWriteError(f"cannot write {path} ({_system_reason(exc)})") from None
        raise StoreError(f"{path}: {failing} ({exc})") from None


@contextlib.contextmanager
def writing(path: Path):
    """Turn a failed write into :class:`ResultsWriteError` (h5py reports a failed write(2) as OSError or RuntimeError)."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        raise ResultsWriteError(f"cannot write {path} ({_system_reason(exc)})") from exc


def _system_reason(exc: BaseException) -> str:
    """``No space left on device``: the system's words for a failed write, out of h5py's long message."""
    if getattr(exc, "errno", None):
        return os.strerror(exc.errno)
    text = str(exc)
    if "error message = '" in text:
        return text.split("error message = '", 1)[1].split("'")[0]
    return text.splitlines()[0] if text else type(exc).__name__


def _disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk or the quota is full (resumable once there is room)."""
    if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return os.strerror(errno.ENOSPC) in text or os.strerror(errno.EDQUOT) in text


def _encoder(param: Param):
    """How a parameter value goes into its column: None when it goes in as it is."""
    if isinstance(param, (FloatParam, IntParam)) or param.kind != "str":
        return None
    return lambda value: str(value).encode()
