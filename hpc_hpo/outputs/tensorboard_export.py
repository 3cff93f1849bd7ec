"""``hpc_hpo export --format tensorboard -o DIR``: the search as TensorBoard's HParams dashboard shows it.

DIR gets the experiment (every searched parameter with its domain, every metric) and one
run per trial, ``trial_000017/``, holding the trial's parameters (a session in HParams),
its value and metrics as scalars at step 0, what it reported per epoch as scalars at each
epoch, and how it ended (success, failure, or still running). Open it with
``tensorboard --logdir DIR``. Needs the ``tensorboard`` package, not TensorFlow: only its
protocol buffers and event writer are used. Our event files end in ``.hpc_hpo``; exporting
again into DIR replaces them (a running search can be exported as often as one likes).
"""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..results.layout import param_column
from ..results.reader import Results
from ..results.records import DONE, RUNNING

SUFFIX = ".hpc_hpo"


def _require_tensorboard() -> None:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ConfigError("--format tensorboard: needs the tensorboard package (pip install tensorboard; TensorFlow "
                          "is not needed); csv and json need nothing") from None


def _hparams(results: Results) -> list:
    from tensorboard.plugins.hparams import summary_v2 as hp

    params = []
    for name, spec in results.space.items():
        kind = spec["type"]
        if kind == "float":
            domain = hp.RealInterval(float(spec["low"]), float(spec["high"]))
        elif kind == "int":
            domain = hp.IntInterval(int(spec["low"]), int(spec["high"]))
        elif kind == "categorical":
            domain = hp.Discrete(list(spec["choices"]))
        else:
            domain = hp.Discrete([spec["value"]])
        params.append(hp.HParam(name, domain))
    return params


def _scalar(tag: str, value: float):
    from tensorboard.compat.proto import summary_pb2

    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])


def _session_end(status: str, end_time: float):
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    code = {DONE: api_pb2.STATUS_SUCCESS, RUNNING: api_pb2.STATUS_RUNNING}.get(status, api_pb2.STATUS_FAILURE)
    info = plugin_data_pb2.SessionEndInfo(status=code, end_time_secs=end_time if math.isfinite(end_time) else 0.0)
    content = plugin_data_pb2.HParamsPluginData(session_end_info=info, version=metadata.PLUGIN_DATA_VERSION)
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(
        tag=metadata.SESSION_END_INFO_TAG, metadata=metadata.create_summary_metadata(content),
        tensor=metadata.NULL_TENSOR)])


class _Run:
    """One event file of ours in ``directory``, written with TensorBoard's record writer on a plain file
    (its ``EventFileWriter`` would import TensorFlow, when installed, for nothing)."""

    def __init__(self, directory: Path, wall_time: float):
        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob(f"events.out.tfevents.*{SUFFIX}"):
            old.unlink()
        name = f"events.out.tfevents.{int(wall_time):010d}.{socket.gethostname()}.{os.getpid()}{SUFFIX}"
        self.writer = RecordWriter(open(directory / name, "wb"))  # noqa: SIM115 - closed by close()
        self._event = event_pb2.Event
        self.writer.write(event_pb2.Event(wall_time=wall_time, file_version="brain.Event:2").SerializeToString())

    def add(self, summary, wall_time: float, step: int = 0) -> None:
        self.writer.write(self._event(wall_time=wall_time, step=step, summary=summary).SerializeToString())

    def close(self) -> None:
        self.writer.close()


def _value(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def export_tensorboard(results: Results, directory: str | Path) -> int:
    """Write the experiment and a run per trial under ``directory``; returns the number of trials written."""
    _require_tensorboard()
    from tensorboard.plugins.hparams import summary_v2 as hp

    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"-o: --format tensorboard writes a directory, and this is a file (got '{out}')")
    records = results.records()
    epoch_names = sorted({e["name"].decode("utf-8", "replace") for e in results.epochs})
    metric_tags = ["value"] + [f"metric/{n}" for n in results.metric_names] + [f"epoch/{n}" for n in epoch_names]
    created = min((r["t_submit"] for r in records if math.isfinite(r["t_submit"])), default=0.0)
    experiment = _Run(out, created)
    experiment.add(hp.hparams_config_pb(_hparams(results), [hp.Metric(tag) for tag in metric_tags],
                                         time_created_secs=created), created)
    experiment.close()
    epochs: dict[int, list] = {}
    for row in results.epochs:
        epochs.setdefault(int(row["trial_id"]), []).append(row)
    for record in records:
        trial_id = record["trial_id"]
        start = record["t_start"] if math.isfinite(record["t_start"]) else record["t_submit"]
        end = record["t_end"] if math.isfinite(record["t_end"]) else start
        run = _Run(out / f"trial_{trial_id:06d}", start)
        params = {name: _value(record[param_column(name)]) for name in results.param_names}
        run.add(hp.hparams_pb(params, trial_id=f"trial {trial_id}", start_time_secs=start), start)
        if record["status"] == DONE and math.isfinite(record["value"]):
            run.add(_scalar("value", record["value"]), end)
        for name in results.metric_names:
            value = record[f"metric_{name}"]
            if math.isfinite(value):
                run.add(_scalar(f"metric/{name}", value), end)
        for row in epochs.get(trial_id, []):
            run.add(_scalar(f"epoch/{row['name'].decode('utf-8', 'replace')}", float(row["value"])),
                    float(row["time"]), int(row["epoch"]))
        run.add(_session_end(record["status"], end), end)
        run.close()
    return len(records)
