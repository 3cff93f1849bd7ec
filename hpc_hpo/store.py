"""The HDF5 results file: its layout, the master's writer, and readers.

Layout (``FORMAT_VERSION`` 3; every string is fixed-length UTF-8 bytes, because HDF5's
single-writer/multiple-reader mode (SWMR) does not support variable-length data):

    /trials         compound, one row per finished trial, appended in order of completion
    /running        compound, same columns, one slot per worker; status "" = free slot
    /metrics        float64 (rows of /trials, metrics), NaN where a trial lacks a metric
    /metric_names   names of the /metrics columns
    /epochs         compound (trial_id, epoch, name, value, time): what trials reported per epoch
    /runs           one row per run (job) that wrote the file: times, ranks, exit code, cost
    attributes      format_version, hpc_hpo_version, config (TOML), space (JSON), seed, ...

Only the master writes, through :class:`ResultsWriter`. The file is switched to SWMR mode
once created, so anyone can read it during the run with ``h5py.File(path, "r", swmr=True)``.
A new file is built under a temporary name and renamed once complete, so the results path
never holds a half-made file. Resuming (and recovering a file whose writer was killed) is
:mod:`hpc_hpo.resume`.
Writes are buffered and flushed when the master is idle or at least every ``flush_interval``
seconds, so writing never holds up dispatch; a result counts as stored once flushed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ._version import __version__
from .errors import ConfigError, ResultsWriteError, StoreError
from .records import RUNNING, TrialRecord
from .space import CategoricalParam, FloatParam, IntParam, Param, Space

log = logging.getLogger(__name__)

FORMAT_VERSION = 3
#: Formats this version reads (2 lacks the ``attempt`` column); only the current one is resumed.
READABLE_FORMATS = (2, 3)
#: Oldest HDF5 file format we write: readable by HDF5 1.10 and later, and SWMR-capable.
LIBVER = ("v110", "v110")
ERROR_BYTES = 2048
HOST_BYTES = 64
#: Room for the GPU ids of one trial: twelve UUIDs (``GPU-8f6c2a1e-...``, 40 characters) or MIG names
#: (``MIG-GPU-<uuid>/1/0``, 50), as SLURM may bind them; a job whose ids need more gets a wider column.
GPUS_BYTES = 512
NAME_BYTES = 64
_CHUNK_ROWS = 64

BASE_COLUMNS: list[tuple[str, Any]] = [
    ("trial_id", "<i8"),
    ("status", "S10"),
    ("value", "<f8"),
    ("phase", "<i2"),
    ("strategy", "S16"),
    ("rank", "<i4"),
    ("host", f"S{HOST_BYTES}"),
    ("t_submit", "<f8"),
    ("t_start", "<f8"),
    ("t_end", "<f8"),
    ("repeat", "<i4"),
    ("attempt", "<i2"),
    ("group", "<i8"),
    ("suggest_seconds", "<f8"),
    ("gpus", f"S{GPUS_BYTES}"),
    ("memory_mb", "<f4"),
    ("error", f"S{ERROR_BYTES}"),
]

EPOCHS_DTYPE = np.dtype([
    ("trial_id", "<i8"),
    ("epoch", "<i4"),
    ("name", f"S{NAME_BYTES}"),
    ("value", "<f8"),
    ("time", "<f8"),
])

RUNS_DTYPE = np.dtype([
    ("run", "<i4"),
    ("hpc_hpo_version", "S16"),
    ("t_start", "<f8"),
    ("t_end", "<f8"),
    ("world_size", "<i4"),
    ("workers", "<i4"),
    ("master_host", f"S{HOST_BYTES}"),
    ("trials", "<i8"),
    ("exit_code", "<i4"),
    ("loop_seconds", "<f8"),
    ("master_cpu_seconds", "<f8"),
])


def param_column(name: str) -> str:
    return f"param_{name}"


def _param_dtype(param: Param) -> Any:
    if isinstance(param, FloatParam):
        return "<f8"
    if isinstance(param, IntParam):
        return "<i8"
    kind = param.kind
    if kind == "str":
        values = param.choices if isinstance(param, CategoricalParam) else (param.value,)
        return f"S{max(1, max(len(str(v).encode()) for v in values))}"
    return {"bool": "?", "int": "<i8", "float": "<f8"}[kind]


def trial_dtype(space: Space, gpus_bytes: int = GPUS_BYTES) -> np.dtype:
    """The compound type of a /trials row for this space (``gpus_bytes`` wide enough for every GPU label)."""
    base = [(name, f"S{max(gpus_bytes, GPUS_BYTES)}" if name == "gpus" else kind) for name, kind in BASE_COLUMNS]
    return np.dtype(base + [(param_column(p.name), _param_dtype(p)) for p in space.params])


def fit_bytes(text: str, size: int) -> bytes:
    """UTF-8 bytes of ``text`` in at most ``size`` bytes; keeps the head and tail of long text."""
    data = text.encode("utf-8", "replace")
    if len(data) <= size:
        return data
    marker = b"\n[...]\n"
    head = size // 3
    tail = size - head - len(marker)
    # Cut on character boundaries so the result decodes cleanly.
    start = data[:head].decode("utf-8", "ignore").encode()
    end = data[-tail:].decode("utf-8", "ignore").encode()
    return start + marker + end


def check_results_path(path: str | Path, overwrite: bool, where: str = "experiment.results") -> Path:
    """Refuse a results path that cannot be written, before any trial starts."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ConfigError(f"{where}: is a directory, not a file (got '{path}')")
    if not directory.is_dir():
        raise ConfigError(f"{where}: directory '{directory}' does not exist; create it first (got '{path}')")
    try:  # os.access says yes to root even on read-only mounts; trying is the only sure test
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{where}: directory '{directory}' is not writable ({reason}) (got '{path}')") from None
    if path.exists() and not overwrite:
        raise ConfigError(
            f"{where}: '{path}' already exists; pass --resume to continue it, --overwrite to replace it, or "
            f"choose another --results "
            f"(got '{path}')"
        )
    return path


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
        self._bytes: dict[tuple[str, int], bytes] = {}  # host, strategy and status strings, encoded once
        self._gpus_bytes = self.dtype["gpus"].itemsize  # 32 in files made before GPU ids were kept whole
        self._rows: list[tuple] = []
        self._row_metrics: list[dict[str, float]] = []
        self._slots: list[TrialRecord | None] = [None] * slots
        self._waiting: list[TrialRecord] = []  # trials to run again that no worker has yet: kept after the slots
        self._running_dirty = True
        self._dirty_since: float | None = None
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
        try:
            file = h5py.File(temporary, "w", libver=LIBVER, locking="best-effort")
        except (OSError, ValueError) as exc:
            if _disk_full(exc):
                raise ResultsWriteError(f"cannot write {path} ({_system_reason(exc)})") from None
            raise StoreError(f"{path}: cannot create the results file ({exc})") from None
        try:
            with writing(path):
                make_layout(file, space, slots, gpus_bytes=max((len(label.encode()) for label in gpu_labels),
                                                               default=0))
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
        """Continue an existing results file (see :mod:`hpc_hpo.resume`); running slots start free.

        ``waiting`` (the trials to run again) are written back into /running, after the slots,
        in the same write that frees the slots, and flushed before this returns: a job killed
        at any later moment leaves them there for the next resume. ``attrs`` (a raised budget,
        the config as now resolved) replace the stored ones; the experiment's identity (space,
        objective, direction) was checked before.
        """
        try:
            file = h5py.File(path, "r+", libver=LIBVER, locking="best-effort")
        except (OSError, ValueError) as exc:
            if _disk_full(exc):
                raise ResultsWriteError(f"cannot write {path} ({_system_reason(exc)})") from None
            raise StoreError(f"{path}: cannot open the results file for writing ({exc})") from None
        writer = cls(file, space, slots, flush_interval)
        writer._waiting = list(waiting)
        try:
            with writing(writer.path):
                writer._write_running()
                for key, value in (attrs or {}).items():
                    if key not in ("space", "created", "format_version"):
                        file.attrs[key] = value
                file.attrs["hpc_hpo_version"] = __version__
                file.flush()
                file.swmr_mode = True
        except ResultsWriteError:
            writer.abandon()
            raise
        return writer

    def start_run(self, world_size: int, workers: int, host: str) -> None:
        """Add this run's row to /runs; :meth:`close` completes it."""
        n = self._runs.shape[0]
        row = np.zeros(1, dtype=RUNS_DTYPE)
        row[0] = (n, __version__.encode(), time.time(), math.nan, world_size, workers,
                  fit_bytes(host, HOST_BYTES), 0, -1, math.nan, math.nan)
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

    def _row(self, record: TrialRecord) -> tuple:
        params = record.params
        if params is None:  # a worker is still choosing this Bayesian trial's point
            values = [b"" if encode is not None else 0 for _, encode in self._encoders]
        else:
            values = [params[name] if encode is None else encode(params[name]) for name, encode in self._encoders]
        return (
            record.trial_id, self._text(record.status, 10), math.nan if record.value is None else record.value,
            record.phase, self._text(record.strategy, 16), record.rank, self._text(record.host, HOST_BYTES),
            record.t_submit, record.t_start, record.t_end, record.repeat, record.attempt, record.group,
            record.suggest_seconds,
            self._gpus(record.gpus), record.memory_mb,
            fit_bytes(record.error, ERROR_BYTES) if record.error else b"", *values,
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
        self._rows.append(self._row(record))
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
        self._running_dirty = True
        self._touch()

    def set_waiting(self, records: list[TrialRecord]) -> None:
        """Keep these trials (to run again, not yet handed out) in /running, after the workers' slots.

        A job killed before it handed them out leaves them there for the next resume.
        """
        self._waiting = list(records)
        self._running_dirty = True
        self._touch()

    @property
    def dirty(self) -> bool:
        return self._dirty_since is not None

    def due(self, idle: bool) -> bool:
        """Whether to flush now: when idle, or when the oldest unwritten change is too old."""
        if self._dirty_since is None:
            return False
        return idle or time.monotonic() - self._dirty_since >= self.flush_interval

    def flush(self) -> None:
        """Write what is queued and make it visible to readers; :class:`ResultsWriteError` if the disk refuses."""
        with writing(self.path):
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            n0 = self._trials.shape[0]
            n1 = n0 + len(self._rows)
            self._trials.resize((n1,))
            self._trials[n0:n1] = np.array(self._rows, dtype=self.dtype)
            self._write_metrics(n0, n1)
            self._rows.clear()
            self._row_metrics.clear()
        if self._epoch_rows:
            n0 = self._epochs.shape[0]
            self._epochs.resize((n0 + len(self._epoch_rows),))
            self._epochs[n0:] = np.array(self._epoch_rows, dtype=EPOCHS_DTYPE)
            self._epoch_rows.clear()
        if self._running_dirty:
            self._write_running()
        self.file.flush()
        self._dirty_since = None

    def _write_running(self) -> None:
        """/running as one write: a slot per worker, then the trials waiting to run again; never smaller
        than it was (SWMR cannot shrink a dataset; and a shrink before the write could lose rows at a kill)."""
        records = self._slots + self._waiting
        size = max(len(records), self._running_ds.shape[0])
        running = np.zeros(size, dtype=self.dtype)  # status b"": a free slot
        for i, record in enumerate(records):
            if record is not None:
                running[i] = self._row(record)
        if self._running_ds.shape[0] != size:
            self._running_ds.resize((size,))
        self._running_ds[:] = running
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

    def close(self, exit_code: int, trials: int) -> None:
        """Flush, complete this run's row in /runs, and close the file (once: later calls do nothing).

        The row's ``loop_seconds`` and ``master_cpu_seconds`` run from :meth:`start_run` until every
        row was written. A failed write, the last flush or HDF5's own writes while closing, raises
        :class:`ResultsWriteError`.
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


def make_layout(file: h5py.File, space: Space, slots: int, gpus_bytes: int = GPUS_BYTES) -> None:
    """Create the empty datasets of a results file (see the module docstring)."""
    dtype = trial_dtype(space, gpus_bytes)
    file.create_dataset("trials", shape=(0,), maxshape=(None,), dtype=dtype, chunks=(_CHUNK_ROWS,),
                        compression="gzip", compression_opts=1, shuffle=True)
    file.create_dataset("running", shape=(slots,), maxshape=(None,), dtype=dtype, chunks=(max(1, slots),))
    file.create_dataset("metrics", shape=(0, 0), maxshape=(None, None), dtype="<f8",
                        chunks=(_CHUNK_ROWS, 8), fillvalue=np.nan)
    file.create_dataset("metric_names", shape=(0,), maxshape=(None,), dtype=f"S{NAME_BYTES}", chunks=(16,))
    file.create_dataset("runs", shape=(0,), maxshape=(None,), dtype=RUNS_DTYPE, chunks=(16,))
    file.create_dataset("epochs", shape=(0,), maxshape=(None,), dtype=EPOCHS_DTYPE, chunks=(256,))


def _encoder(param: Param):
    """How a parameter value goes into its column: None when it goes in as it is."""
    if isinstance(param, (FloatParam, IntParam)) or param.kind != "str":
        return None
    return lambda value: str(value).encode()


# --- reading -----------------------------------------------------------------------------


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
            attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in file.attrs.items()}
            version = attrs.get("format_version")
            if version not in READABLE_FORMATS:
                raise StoreError(f"{path}: results format {version!r} is not supported by hpc_hpo {__version__} "
                                 f"(it reads formats {', '.join(map(str, READABLE_FORMATS))})")
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
            runs = file["runs"][:]
            epochs = file["epochs"][:]
        except KeyError as exc:
            raise StoreError(f"{path}: not an hpc_hpo results file (missing {exc})") from None
    # A trial can be seen both finished and still in its running slot between two flushes.
    running = running[~np.isin(running["trial_id"], finished["trial_id"])]
    metrics = metrics[: len(finished) + len(running)]
    trials = np.concatenate([finished, running]) if len(running) else finished
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
