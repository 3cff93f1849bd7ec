"""The HDF5 results file: layout, buffered writes, reading during a run, path checks."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from hpc_hpo.errors import ConfigError, ResultsWriteError, StoreError
from hpc_hpo.results.layout import ERROR_BYTES, FORMAT_VERSION, fit_bytes
from hpc_hpo.results.paths import check_results_path
from hpc_hpo.results.reader import read_results
from hpc_hpo.results.records import DONE, FAILED, RUNNING, TrialRecord
from hpc_hpo.results.writer import ResultsWriter
from hpc_hpo.search.space import parse_space

from conftest import CloseFails

SPACE = parse_space({
    "x": {"type": "float", "low": -5.0, "high": 5.0},
    "lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
    "units": {"type": "int", "low": 16, "high": 512},
    "act": {"type": "categorical", "choices": ["relu", "tanh", "élu"]},
    "flag": {"type": "categorical", "choices": [True, False]},
    "bs": {"type": "categorical", "choices": [32, 64]},
    "opt": {"type": "fixed", "value": "adam"},
})


def record(i, status=DONE, value=None, metrics=None, error="", rank=1):
    params = {"x": 0.5 * i, "lr": 1e-3, "units": 16 + i, "act": ["relu", "tanh", "élu"][i % 3],
              "flag": bool(i % 2), "bs": 64, "opt": "adam"}
    return TrialRecord(trial_id=i, status=status, params=params, phase=1, strategy="random", rank=rank,
                       host=f"node{rank}", t_submit=100.0 + i, t_start=100.5 + i, t_end=101.0 + i,
                       value=(float(i) if value is None and status == DONE else value),
                       metrics=metrics or {}, error=error)


def create(path, slots=2, **kw):
    return ResultsWriter.create(path, SPACE, attrs={"name": "t", "direction": "minimize", "budget": 10,
                                                    "config": "[experiment]\n"}, slots=slots, **kw)


def test_rows_round_trip_with_every_parameter_type_and_late_metrics(tmp_path):
    path = tmp_path / "r.h5"
    writer = create(path)
    writer.start_run(world_size=3, workers=2, host="login1")
    writer.append(record(0))
    writer.append(record(1, status=FAILED, error="ValueError: boom (rank 1 on node1)"))
    writer.flush()
    writer.append(record(2, metrics={"acc": 0.75}))
    writer.append(record(3, metrics={"acc": 0.5, "loss": 2.0}))
    writer.set_running(0, record(4, status=RUNNING, rank=1))
    writer.close(exit_code=0, trials=4)

    results = read_results(path)
    rows = results.records()
    assert [r["trial_id"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["status"] for r in rows] == ["done", "failed", "done", "done", "running"]
    assert rows[0]["value"] == 0.0 and math.isnan(rows[1]["value"])
    assert rows[1]["error"] == "ValueError: boom (rank 1 on node1)"
    assert rows[2]["param_act"] == "élu" and rows[2]["param_flag"] is False and rows[3]["param_flag"] is True
    assert rows[3]["param_units"] == 19 and rows[3]["param_bs"] == 64 and rows[3]["param_opt"] == "adam"
    assert rows[3]["host"] == "node1" and rows[3]["t_end"] == 104.0
    assert results.metric_names == ["acc", "loss"]
    assert math.isnan(rows[0]["metric_acc"]) and rows[2]["metric_acc"] == 0.75
    assert math.isnan(rows[2]["metric_loss"]) and rows[3]["metric_loss"] == 2.0
    assert results.runs[0]["exit_code"] == 0 and results.runs[0]["world_size"] == 3


def test_layout_is_readable_with_plain_h5py(tmp_path):
    path = tmp_path / "r.h5"
    writer = create(path)
    writer.append(record(0, metrics={"acc": 0.9})._replace(gpus="4,5", memory_mb=812.5))
    writer.append_epoch(0, 0, {"loss": 1.5, "val_accuracy": 0.5}, 100.0)
    writer.append_epoch(0, 1, {"loss": 0.7, "val_accuracy": 0.8}, 101.0)
    writer.close(exit_code=0, trials=1)
    with h5py.File(path, "r") as f:
        assert set(f) == {"trials", "running", "metrics", "metric_names", "runs", "epochs"}
        trials = f["trials"][:]
        assert trials["param_act"][0].decode() == "relu"
        assert trials["status"][0] == b"done"
        assert trials["gpus"][0] == b"4,5" and trials["memory_mb"][0] == 812.5
        epochs = f["epochs"][:]
        assert epochs["name"].tolist() == [b"loss", b"val_accuracy"] * 2
        assert epochs["epoch"].tolist() == [0, 0, 1, 1] and epochs["value"][3] == 0.8
        assert f["metric_names"][:].tolist() == [b"acc"]
        assert f["metrics"][0, 0] == 0.9
        assert f.attrs["format_version"] == 6 and f.attrs["direction"] == "minimize"
        assert "x" in f.attrs["space"]
        # /running: the columns of /trials but error (a running trial has none), so a quarter of the bytes a row.
        assert f["running"].dtype.names == tuple(n for n in f["trials"].dtype.names if n != "error")
        assert f["running"].dtype.itemsize * 3 < f["trials"].dtype.itemsize
        assert "master_wait_cpu_seconds" in f["runs"].dtype.names


def test_running_trials_read_with_the_columns_of_finished_ones(tmp_path):
    path = tmp_path / "r.h5"
    writer = create(path, slots=2)
    writer.append(record(0, status=FAILED, error="ValueError: boom")._replace(gpus="0"))
    writer.set_running(1, record(1, status=RUNNING)._replace(gpus="2"))
    writer.flush()
    results = read_results(path)
    rows = results.records()
    assert [(r["trial_id"], r["status"], r["error"], r["gpus"]) for r in rows] == [
        (0, "failed", "ValueError: boom", "0"), (1, "running", "", "2")]
    assert "error" in results.columns
    writer.close(exit_code=0, trials=1)


def test_nothing_is_visible_before_a_flush_and_everything_after(tmp_path):
    path = tmp_path / "r.h5"
    writer = create(path, flush_interval=10.0)
    writer.append(record(0))
    assert writer.dirty and not writer.due(idle=False) and writer.due(idle=True)
    reader = [sys.executable, "-c", textwrap.dedent(f"""
        from hpc_hpo.results.reader import read_results
        print(len(read_results({str(path)!r}).records()))
    """)]
    assert subprocess.run(reader, capture_output=True, text=True, check=True).stdout.strip() == "0"
    writer.flush()
    # Another process reads the file while this one still holds it open for writing (SWMR).
    assert subprocess.run(reader, capture_output=True, text=True, check=True).stdout.strip() == "1"
    writer.close(exit_code=0, trials=1)


def test_a_trial_seen_both_running_and_finished_counts_once(tmp_path):
    path = tmp_path / "r.h5"
    writer = create(path)
    writer.set_running(0, record(0, status=RUNNING))
    writer.append(record(0))
    writer.close(exit_code=0, trials=1)
    assert [r["status"] for r in read_results(path).records()] == ["done"]


def test_a_reader_that_sees_metric_columns_before_their_names_or_rows_still_reads(tmp_path):
    """A reader reads each dataset at its own moment while the master writes: /metrics may be ahead of
    /metric_names and /trials (seen once by a status poll mid-run). What both show is read; nothing fails."""
    path = tmp_path / "r.h5"
    writer = create(path)
    writer.append(record(0, metrics={"acc": 0.75, "loss": 2.0}))
    writer.append(record(1, metrics={"acc": 0.5, "loss": 1.0}))
    writer.close(exit_code=0, trials=2)
    with h5py.File(path, "r+") as f:  # the moment before the names and the second row were visible
        f["metric_names"].resize((1,))
        f["trials"].resize((1,))
    results = read_results(path)
    rows = results.records()
    assert results.metric_names == ["acc"] and [r["trial_id"] for r in rows] == [0]
    assert rows[0]["metric_acc"] == 0.75 and "metric_loss" not in rows[0]
    with h5py.File(path, "r+") as f:  # names ahead of the metrics: the missing column reads as NaN
        f["metric_names"].resize((2,))
        f["metric_names"][:] = [b"acc", b"loss"]
        f["metrics"].resize((1, 1))
    rows = read_results(path).records()
    assert rows[0]["metric_acc"] == 0.75 and math.isnan(rows[0]["metric_loss"])


def test_long_errors_keep_head_and_tail():
    text = "RuntimeError: bad (rank 2 on n1)\n" + "\n".join(f"  frame {i}" for i in range(2000)) + "\nlast line"
    data = fit_bytes(text, ERROR_BYTES)
    assert len(data) <= ERROR_BYTES
    decoded = data.decode()
    assert decoded.startswith("RuntimeError: bad (rank 2 on n1)") and decoded.endswith("last line")
    assert "[...]" in decoded
    assert len(fit_bytes("é" * 5000, 101).decode()) > 0  # cut on character boundaries


def test_existing_file_is_never_overwritten_without_asking(tmp_path):
    path = tmp_path / "r.h5"
    path.write_bytes(b"precious")
    with pytest.raises(ConfigError, match="already exists; pass --resume to continue it, --overwrite"):
        check_results_path(path, overwrite=False)
    with pytest.raises(StoreError, match="cannot create the results file"):
        create(path)
    assert path.read_bytes() == b"precious"
    assert check_results_path(path, overwrite=True) == path


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "missing" / "r.h5", "directory '.*missing' does not exist; create it first"),
    (lambda tmp: tmp, "is a directory, not a file"),
    (lambda tmp: "/proc/r.h5", "directory '/proc' is not writable"),
])
def test_bad_results_paths(tmp_path, make, message):
    with pytest.raises(ConfigError, match=message):
        check_results_path(make(tmp_path), overwrite=False)


def test_reading_files_that_are_not_results(tmp_path):
    with pytest.raises(StoreError, match="no such results file"):
        read_results(tmp_path / "none.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.attrs["format_version"] = FORMAT_VERSION
    with pytest.raises(StoreError, match="not an hpc_hpo results file"):
        read_results(tmp_path / "other.h5")
    with h5py.File(tmp_path / "old.h5", "w") as f:
        f.attrs["format_version"] = 1
    with pytest.raises(StoreError, match="results format 1 is not supported"):
        read_results(tmp_path / "old.h5")


def test_file_is_compressed(tmp_path):
    path = tmp_path / "r.h5"
    writer = create(path, slots=8)
    for i in range(2000):
        writer.append(record(i % 400))
    writer.close(exit_code=0, trials=2000)
    row_bytes = np.dtype(h5py.File(path, "r")["trials"].dtype).itemsize
    assert path.stat().st_size < 2000 * row_bytes / 5  # the error column is mostly padding


def test_repeats_groups_suggestion_time_and_a_point_still_being_chosen(tmp_path):
    path = tmp_path / "r.h5"
    writer = create(path)
    writer.append(record(0)._replace(strategy="bayes", suggest_seconds=0.125))
    writer.append(record(0)._replace(trial_id=1, strategy="bayes", repeat=1, group=0))
    writer.set_running(0, record(2, status=RUNNING)._replace(params=None, strategy="bayes"))
    writer.close(exit_code=0, trials=2)
    rows = read_results(path).records()
    assert [(r["trial_id"], r["repeat"], r["group"]) for r in rows[:2]] == [(0, 0, -1), (1, 1, 0)]
    assert rows[0]["suggest_seconds"] == 0.125 and math.isnan(rows[1]["suggest_seconds"])
    chosen_later = rows[2]
    assert chosen_later["status"] == "running" and chosen_later["param_act"] == "" and chosen_later["param_units"] == 0


@pytest.mark.parametrize("space", [
    SPACE,  # strings among the values: each encoded
    parse_space({"x": {"type": "float", "low": 0.0, "high": 1.0}}),  # one number
    parse_space({"x": {"type": "float", "low": 0.0, "high": 1.0}, "n": {"type": "int", "low": 1, "high": 9},
                 "b": {"type": "categorical", "choices": [16, 32]}}),  # numbers only: taken in one call
], ids=["mixed", "one-number", "numbers"])
def test_every_finished_trial_is_stored_as_it_was_whatever_each_flush_writes(tmp_path, space):
    """Finished trials are encoded as they come into a queue kept from flush to flush: flushes of 1 to 300 rows,
    the queue growing between them, store every field of every trial, in order."""
    path = tmp_path / "r.h5"
    writer = ResultsWriter.create(path, space, attrs={"name": "t", "direction": "minimize", "budget": 10},
                                  slots=2)
    points = space.sample(np.random.default_rng(0), 600)
    expected, trial_id = [], 0
    for count in (1, 300, 3, 64, 65, 130, 0, 2):
        for _ in range(count):
            status = FAILED if trial_id % 7 == 3 else DONE
            trial = TrialRecord(trial_id, status, points[trial_id], 1 + trial_id % 2, "random", 1 + trial_id % 2,
                                f"node{trial_id % 3}", 10.0 + trial_id, 11.0 + trial_id, 12.5 + trial_id,
                                value=None if status == FAILED else trial_id / 8, error="E: x" if status == FAILED else "",
                                repeat=trial_id % 2, attempt=1 + trial_id % 3, group=trial_id - 1, suggest_seconds=0.25,
                                gpus=str(trial_id % 4), memory_mb=100.5, epochs=trial_id % 5, checkpoint_mb=1.5)
            writer.append(trial)
            expected.append(trial)
            trial_id += 1
        writer.flush()
    writer.close(exit_code=0, trials=len(expected))
    rows = read_results(path).records()
    assert len(rows) == len(expected)
    for row, trial in zip(rows, expected, strict=True):
        stored = {name: row[name] for name in ("trial_id", "status", "phase", "strategy", "rank", "host", "t_submit",
                                               "t_start", "t_end", "error", "repeat", "attempt", "group",
                                               "suggest_seconds", "gpus", "memory_mb", "epochs", "checkpoint_mb")}
        assert stored == {name: getattr(trial, name) for name in stored}
        assert row["value"] == trial.value or (trial.value is None and math.isnan(row["value"]))
        assert {name: row[f"param_{name}"] for name in trial.params} == trial.params


#: What SLURM's GPU binding by UUID and MIG put in CUDA_VISIBLE_DEVICES: 40 characters or more per device.
UUIDS = ["GPU-8f6c2a1e-3d5b-4c7a-9e21-0b1c2d3e4f50", "GPU-1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
         "MIG-0b6c9e1a-2f3d-5b4c-8a7e-1d2c3b4a5f6e", "MIG-GPU-7d8e9f0a-1b2c-4d3e-9f8a-7b6c5d4e3f2a/1/0"]


def test_gpu_ids_are_stored_whole_however_long(tmp_path):
    path = tmp_path / "r.h5"
    writer = create(path)
    label = ",".join(UUIDS)  # one trial on four GPUs named by UUID: 171 characters
    writer.append(record(0)._replace(gpus=label))
    writer.set_running(1, record(1, status=RUNNING)._replace(gpus=UUIDS[3]))
    writer.close(exit_code=0, trials=1)
    rows = read_results(path).records()
    assert [r["gpus"] for r in rows] == [label, UUIDS[3]]


def test_a_failed_close_is_reported_not_hidden(tmp_path):
    path = tmp_path / "r.h5"
    writer = create(path)
    writer.start_run(world_size=2, workers=1, host="login1")
    writer.append(record(0))
    writer.file = CloseFails(writer.file)
    with pytest.raises(ResultsWriteError, match=rf"^cannot write {path} \(No space left on device\)$"):
        writer.close(exit_code=0, trials=1)
    assert writer.failed  # the process must skip HDF5's clean-up at exit
    assert [r["trial_id"] for r in read_results(path).records()] == [0]  # flushed before the close failed


def test_resuming_writes_the_trials_to_run_again_back_as_it_opens_the_file(tmp_path):
    """A job killed at any moment after opening leaves them in /running for the next resume."""
    path = tmp_path / "r.h5"
    writer = create(path, slots=2)
    writer.start_run(world_size=3, workers=2, host="login1")
    writer.set_running(0, record(4, status=RUNNING))
    writer.set_running(1, record(5, status=RUNNING))
    writer.close(exit_code=3, trials=0)
    script = textwrap.dedent(f"""
        import os, sys
        sys.path[:0] = [{str(Path(__file__).parent)!r}, {str(Path(__file__).parent.parent)!r}]  # with conftest
        from test_store import SPACE, record
        from hpc_hpo.results.records import RUNNING
        from hpc_hpo.results.writer import ResultsWriter
        ResultsWriter.open({str(path)!r}, SPACE, slots=3, waiting=[record(4, status=RUNNING), record(5, status=RUNNING)])
        os._exit(9)  # killed before anything else was written
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    rows = read_results(path).records()
    assert [(r["trial_id"], r["status"]) for r in rows] == [(4, "running"), (5, "running")]
    with h5py.File(path, "r", swmr=True) as file:
        assert [bytes(s) for s in file["running"]["status"]] == [b"", b"", b"", b"running", b"running"]


def test_under_load_running_slots_wait_for_their_time_share_while_finished_trials_never_wait(tmp_path, monkeypatch):
    """Thousands of workers, a master busy all the time: /running may take at most RUNNING_TIME_SHARE of the time
    (here a share so small that one write holds the next back for minutes). A flush under load still writes every
    finished trial; the running slots wait, and a reader sees no trial twice meanwhile; a flush that is not under
    load (and the close) writes them."""
    monkeypatch.setattr("hpc_hpo.results.writer.RUNNING_TIME_SHARE", 1e-7)
    path = tmp_path / "r.h5"
    writer = create(path, slots=3, flush_interval=0.0)
    writer.start_run(world_size=4, workers=3, host="login1")  # writes /running once: the next waits
    for slot in range(3):
        writer.set_running(slot, record(slot, status=RUNNING, rank=slot + 1))
    assert not writer.due(idle=True), "only held-back running slots changed: nothing is due"
    writer.set_running(0, None)
    writer.append(record(0))
    assert writer.due(idle=True)
    writer.flush(under_load=True)

    def seen():
        with h5py.File(path, "r", swmr=True) as file:
            running = [int(r["trial_id"]) for r in file["running"][:] if r["status"] == RUNNING.encode()]
        rows = read_results(path).records()
        return [r["trial_id"] for r in rows], running, [r["status"] for r in rows]

    trials, running, statuses = seen()
    assert trials == [0] and running == [] and statuses == ["done"], "the finished trial is written at once"
    assert writer.dirty and not writer.due(idle=True)
    writer.set_running(0, record(3, status=RUNNING, rank=1))
    writer.flush()  # not under load: everything
    trials, running, statuses = seen()
    assert running == [3, 1, 2] and trials == [0, 1, 2, 3] and statuses == ["done", "running", "running", "running"]
    writer.set_running(1, None)
    writer.append(record(1))
    writer.flush(under_load=True)
    trials, running, statuses = seen()
    assert running == [3, 1, 2], "the slot of trial 1 waits for its turn"
    assert trials == [0, 1, 2, 3] and statuses == ["done", "done", "running", "running"], "trial 1 is seen once, done"
    writer.close(exit_code=0, trials=2)
    with h5py.File(path, "r", swmr=True) as file:
        assert [int(r["trial_id"]) for r in file["running"][:] if r["status"] == RUNNING.encode()] == [3, 2]


@pytest.mark.parametrize("slots", [40, 2000])  # a few changes among 40 slots: one span written; among 2,000: the rows
def test_running_slots_and_waiting_trials_stay_exact_when_a_flush_writes_only_what_changed(tmp_path, slots):
    """A flush writes only the slots changed since the last one (thousands of workers): after any mix of changes,
    /running holds exactly each slot's last state, then the waiting trials, then free rows."""
    path = tmp_path / "r.h5"
    writer = create(path, slots=slots)
    rng = np.random.default_rng(5)
    state: list = [None] * slots
    waiting: list = []
    ids = iter(range(1000))
    for _ in range(60):
        for _ in range(int(rng.integers(0, 6))):
            slot = int(rng.integers(slots))
            state[slot] = None if rng.random() < 0.3 else record(next(ids), status=RUNNING, rank=slot + 1)
            writer.set_running(slot, state[slot])
        if rng.random() < 0.2:
            waiting = [record(next(ids), status=RUNNING) for _ in range(int(rng.integers(0, 5)))]
            writer.set_waiting(waiting)
        writer.flush()
        with h5py.File(path, "r", swmr=True) as file:
            rows = file["running"][:]
        expected = [None if s is None else s.trial_id for s in state] + [w.trial_id for w in waiting]
        assert len(rows) >= len(expected)
        got = [int(r["trial_id"]) if r["status"] == RUNNING.encode() else None for r in rows]
        assert got == expected + [None] * (len(rows) - len(expected))
    writer.close(exit_code=0, trials=0)
