"""The columns and datasets of a results file (see :mod:`hpc_hpo.results`), in one place for the writer and
the recovery of a killed file."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np

from ..search.space import CategoricalParam, FloatParam, IntParam, Param, Space

FORMAT_VERSION = 6
#: Formats this version reads (2 lacks the ``attempt`` column, 3 the ``epochs`` one, 4 the pbt columns ``member``,
#: ``parent``, ``start_epoch``, ``end_epoch`` and ``checkpoint_mb``; 5 has /running rows as wide as /trials rows,
#: ``error`` included, and no ``master_wait_cpu_seconds`` in /runs).
READABLE_FORMATS = (2, 3, 4, 5, 6)
#: Formats this version resumes, writing each in its own layout (5 differs from 6 only in widths the writer follows).
RESUMABLE_FORMATS = (5, 6)
#: Oldest HDF5 file format we write: readable by HDF5 1.10 and later, and SWMR-capable.
LIBVER = ("v110", "v110")
ERROR_BYTES = 2048
HOST_BYTES = 64
#: Rows per chunk of /running: a flush rewrites only the chunks of the slots that changed (one chunk for 16,384 slots
#: made every flush rewrite the whole dataset).
RUNNING_CHUNK_ROWS = 16
#: Room for the GPU ids of one trial: twelve UUIDs (``GPU-8f6c2a1e-...``, 40 characters) or MIG names
#: (``MIG-GPU-<uuid>/1/0``, 50), as SLURM may bind them; a job whose ids need more gets a wider column.
GPUS_BYTES = 512
NAME_BYTES = 64
#: Rows per chunk of /trials and /metrics. A flush of a few rows compresses again the whole chunk they land in: with
#: 64 rows (180 KB before compression) a result cost a master waiting for results 1.3 ms, with 16 0.5 ms; the file's
#: size and its reading time are the same.
CHUNK_ROWS = 16
#: Datasets every results file has; a file without them is not ours.
DATASETS = ("trials", "running", "metrics", "metric_names", "runs", "epochs")

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
    ("epochs", "<i4"),
    ("member", "<i4"),
    ("parent", "<i8"),
    ("start_epoch", "<i4"),
    ("end_epoch", "<i4"),
    ("checkpoint_mb", "<f4"),
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
    ("master_wait_cpu_seconds", "<f8"),
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


def running_dtype(dtype: np.dtype) -> np.dtype:
    """The compound type of a /running row: a /trials row without ``error`` (a running trial has none), a quarter
    of the width: with thousands of workers a flush writes thousands of rows."""
    return np.dtype([(name, dtype.fields[name][0]) for name in dtype.names if name != "error"])


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


def make_layout(file: h5py.File, dtype: np.dtype, slots: int, contents: Mapping[str, np.ndarray] | None = None) -> None:
    """Create the datasets of a results file: empty (``slots`` free running slots), or holding ``contents``
    (dataset name -> array: what a recovery copies from a file whose writer was killed)."""
    c = contents or {}
    file.create_dataset("trials", data=c.get("trials", np.zeros(0, dtype)), maxshape=(None,), dtype=dtype,
                        chunks=(CHUNK_ROWS,), compression="gzip", compression_opts=1, shuffle=True)
    running = c.get("running", np.zeros(slots, running_dtype(dtype)))
    file.create_dataset("running", data=running, maxshape=(None,), dtype=running.dtype,
                        chunks=(max(1, min(len(running), RUNNING_CHUNK_ROWS)),))
    file.create_dataset("metrics", data=c.get("metrics", np.zeros((0, 0))), maxshape=(None, None), dtype="<f8",
                        chunks=(CHUNK_ROWS, 8), fillvalue=np.nan)
    file.create_dataset("metric_names", data=c.get("metric_names", np.zeros(0, f"S{NAME_BYTES}")), maxshape=(None,),
                        chunks=(16,))
    file.create_dataset("runs", data=c.get("runs", np.zeros(0, RUNS_DTYPE)), maxshape=(None,), chunks=(16,))
    file.create_dataset("epochs", data=c.get("epochs", np.zeros(0, EPOCHS_DTYPE)), maxshape=(None,), chunks=(256,))


def decode_attrs(file: h5py.File) -> dict[str, Any]:
    """The file's attributes as plain Python values (numpy scalars unwrapped)."""
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in file.attrs.items()}
