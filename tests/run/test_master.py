"""The master's loop against workers played by the test (a fake comm): when results become durable, what a
stop records, retired workers, a second signal, a failed last write. No MPI: each case runs in milliseconds."""

from __future__ import annotations

import gc
import logging
import signal
import time
from collections import deque

import pytest

from hpc_hpo.config import parse_config
from hpc_hpo.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_RESUMABLE
from hpc_hpo.results.reader import read_results
from hpc_hpo.results.writer import ResultsWriter
from hpc_hpo.run.comm import Comm
from hpc_hpo.run.master import MASTER_GC_THRESHOLD, MasterLoop, collector_for_the_loop
from hpc_hpo.run.options import RunOptions
from hpc_hpo.run.protocol import Bye, Hello, Result, Stop, Task
from hpc_hpo.run.signals import StopRequest

from conftest import CloseFails


class FakeComm(Comm):
    """The master's side of a comm whose workers are played by ``answer(dest, message) -> [(source, reply)]``."""

    def __init__(self, ranks: list[int], answer, in_process: bool = False, poll_delay: float = 0.0):
        self.rank, self.size = 0, len(ranks) + (0 if in_process else 1)
        self._ranks = ranks
        self.in_process = in_process
        self.answer = answer
        self.poll_delay = poll_delay
        self.inbox: deque = deque()
        self.sent: list[tuple[int, object]] = []
        self.polled = 0  # messages the master has taken so far
        self.aborted: int | None = None
        self.on_poll = None

    @property
    def worker_ranks(self) -> list[int]:
        return self._ranks

    def send(self, message, dest: int) -> None:
        self.sent.append((dest, message))
        self.inbox.extend(self.answer(dest, message))

    def poll(self):
        if self.on_poll is not None:
            self.on_poll()
        if self.poll_delay:
            time.sleep(self.poll_delay)
        if not self.inbox:
            return None
        self.polled += 1
        return self.inbox.popleft()

    def abort(self, code: int) -> None:
        self.aborted = code


def done(task: Task, value: float = 1.0, retire: str = "") -> Result:
    now = time.time()
    result = Result(task.trial_id, value, {}, "", now, now, "done")
    return result._replace(retire=retire) if retire else result


def bye_at_shutdown(dest: int, message) -> list:
    return [(dest, Bye(dest))] if isinstance(message, Stop) and message.exit_code == EXIT_RESUMABLE else []


def make_loop(tmp_path, comm: FakeComm, trials: int = 6, flush_interval: float = 0.1) -> MasterLoop:
    config = parse_config({"experiment": {"objective": "m:f", "seed": 1, "results": str(tmp_path / "r.h5")},
                           "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
                           "phase": [{"strategy": "random", "trials": trials}]})
    writer = ResultsWriter.create(config.results_path, config.space, slots=len(comm.worker_ranks),
                                  attrs={"budget": trials, "direction": "minimize"}, flush_interval=flush_interval)
    writer.start_run(world_size=comm.size, workers=len(comm.worker_ranks), host="login1")
    hellos = [Hello(rank, f"node{rank}", 100 + rank) for rank in comm.worker_ranks]
    return MasterLoop(comm, config, writer, hellos, RunOptions(progress="lines"),
                      stop_request=StopRequest(on_second=lambda signum: None))


def stored(tmp_path) -> list[dict]:
    return [r for r in read_results(tmp_path / "r.h5").records() if r["status"] != "running"]


def test_results_queued_when_a_stop_comes_are_recorded_not_run_again(tmp_path):
    """Both workers finish at once; the stop signal is there before the master looks at their results."""
    loop = None

    def answer(dest, message):
        if isinstance(message, Task):
            loop.stop_request.signum = signal.SIGTERM
            return [(dest, done(message))]
        return bye_at_shutdown(dest, message)

    comm = FakeComm([1, 2], answer)
    loop = make_loop(tmp_path, comm)
    assert loop.run() == EXIT_RESUMABLE
    assert sorted(r["trial_id"] for r in stored(tmp_path)) == [0, 1]
    # one Stop per worker, saying why (optimize raises it on every rank)
    assert [m for _, m in comm.sent if isinstance(m, Stop)] == [Stop(EXIT_RESUMABLE, "got SIGTERM")] * 2
    assert read_results(tmp_path / "r.h5").runs[-1]["exit_code"] == EXIT_RESUMABLE


def test_results_that_arrive_while_the_master_waits_for_goodbyes_are_recorded(tmp_path):
    """Rank 2's trial ends after the stop, before its Bye: its result is stored; rank 1's trial stays running."""
    loop = None

    def answer(dest, message):
        if isinstance(message, Task):
            if dest == 1:
                loop.stop_request.signum = signal.SIGUSR1
            return []
        if isinstance(message, Stop) and dest == 2:
            task = next(m for d, m in comm.sent if d == 2 and isinstance(m, Task))
            return [(2, done(task, 0.5)), (2, Bye(2))]
        return bye_at_shutdown(dest, message)

    comm = FakeComm([1, 2], answer)
    loop = make_loop(tmp_path, comm)
    assert loop.run() == EXIT_RESUMABLE
    rows = read_results(tmp_path / "r.h5").records()
    assert [(r["trial_id"], r["status"]) for r in rows] == [(0, "running"), (1, "done")]


def test_under_a_flood_of_results_each_is_written_within_the_flush_interval(tmp_path):
    """Results arrive without a pause (the master is never idle) and each takes 20 ms to take in: with a
    50 ms flush interval every result must be written within three messages, not at the 32nd."""
    writes = []

    def answer(dest, message):
        return [(dest, done(message))] if isinstance(message, Task) else bye_at_shutdown(dest, message)

    comm = FakeComm([1, 2], answer, poll_delay=0.02)
    loop = make_loop(tmp_path, comm, trials=60, flush_interval=0.05)
    arrived: dict[int, int] = {}
    real_apply = loop.apply

    def apply(instructions):
        for instruction in instructions:
            if type(instruction).__name__ == "Record":
                arrived[instruction.trial.trial_id] = comm.polled
        real_apply(instructions)

    real_flush = loop.writer._flush

    def flush(under_load):
        queued = loop.writer._queue[:loop.writer._queued]  # the finished trials' rows this flush writes
        writes.append((comm.polled, queued["trial_id"].tolist()))
        real_flush(under_load)

    loop.apply, loop.writer._flush = apply, flush
    assert loop.run() == EXIT_OK
    written = {trial: polled for polled, rows in writes for trial in rows}
    assert sorted(written) == list(range(60))
    late = {t: written[t] - arrived[t] for t in written if written[t] - arrived[t] > 3}
    assert not late, f"results written more than 3 messages after they arrived: {late}"


def test_with_one_process_every_finished_trial_is_written_before_the_next_one_starts(tmp_path):
    unwritten = []
    loop = None

    def worker(dest, message):
        if isinstance(message, Task):
            if loop.writer.dirty:  # the trial is about to run: nothing may wait in the master's buffer
                unwritten.append(message.trial_id)
            return [(0, done(message))]
        return bye_at_shutdown(dest, message)

    comm = FakeComm([0], worker, in_process=True)
    loop = make_loop(tmp_path, comm, trials=10, flush_interval=3600)  # the interval alone would never write
    assert loop.run() == EXIT_OK
    assert unwritten == []
    assert len(stored(tmp_path)) == 10


@pytest.mark.parametrize("in_process", [False, True])
def test_the_master_sets_the_garbage_collector_for_its_loop_only_when_no_trial_runs_in_its_process(tmp_path,
                                                                                                    in_process):
    """A master of its own freezes what exists when its loop starts and collects after 10,000 containers, not 700
    (thousands of trials in flight made young collections 4-25x dearer, docs/performance.md); in one process the
    trials run in the master's interpreter and keep Python's defaults. After the loop, the process is as before."""
    seen = []

    def worker(dest, message):
        if isinstance(message, Task):
            seen.append((gc.get_threshold()[0], gc.get_freeze_count()))
            return [(dest, done(message))]
        return bye_at_shutdown(dest, message)

    before = gc.get_threshold(), gc.get_freeze_count()
    comm = FakeComm([0] if in_process else [1, 2], worker, in_process=in_process)
    assert make_loop(tmp_path, comm, trials=6).run() == EXIT_OK
    assert len(seen) == 6 and len(stored(tmp_path)) == 6
    if in_process:
        assert set(seen) == {(before[0][0], before[1])}
    else:
        assert all(threshold == MASTER_GC_THRESHOLD and frozen > 0 for threshold, frozen in seen)
    assert (gc.get_threshold(), gc.get_freeze_count()) == before


def test_the_loops_collector_settings_are_undone_when_the_loop_fails():
    before = gc.get_threshold(), gc.get_freeze_count()
    with pytest.raises(RuntimeError), collector_for_the_loop():
        assert gc.get_threshold()[0] == MASTER_GC_THRESHOLD and gc.get_freeze_count() > 0
        assert gc.get_threshold()[1:] == before[0][1:]
        raise RuntimeError("an internal error in the loop")
    assert (gc.get_threshold(), gc.get_freeze_count()) == before
    with collector_for_the_loop(enabled=False):
        assert (gc.get_threshold(), gc.get_freeze_count()) == before
    gc.freeze()  # a script that froze its own objects before calling hpc_hpo.optimize
    try:
        frozen = gc.get_freeze_count()
        with collector_for_the_loop():
            assert gc.get_threshold()[0] == MASTER_GC_THRESHOLD and gc.get_freeze_count() == frozen
        assert gc.get_threshold() == before[0] and gc.get_freeze_count() == frozen  # still frozen, as it left them
    finally:
        gc.unfreeze()


def test_a_retired_worker_is_stopped_and_the_others_finish_the_search(tmp_path, caplog):
    def answer(dest, message):
        if isinstance(message, Task):
            return [(dest, done(message, retire="its trial process failed to start 3 times in a row" if dest == 2
                                else ""))]
        return bye_at_shutdown(dest, message)

    comm = FakeComm([1, 2], answer)
    loop = make_loop(tmp_path, comm, trials=8)
    with caplog.at_level(logging.WARNING, logger="hpc_hpo"):
        assert loop.run() == EXIT_OK
    rows = stored(tmp_path)
    assert len(rows) == 8 and sum(r["rank"] == 2 for r in rows) == 1  # its last trial is kept, then no more
    assert (2, Stop(EXIT_OK)) in comm.sent
    assert "worker rank 2 (node2) retired: its trial process failed to start 3 times in a row; the search goes " \
           "on with 1 worker" in caplog.text


def test_when_every_worker_has_retired_the_search_fails(tmp_path, capsys):
    def answer(dest, message):
        if isinstance(message, Task):
            return [(dest, done(message, retire="its trial process failed to start 3 times in a row"))]
        return bye_at_shutdown(dest, message)

    comm = FakeComm([1, 2], answer)
    loop = make_loop(tmp_path, comm, trials=8)
    assert loop.run() == EXIT_FAILED
    assert len(stored(tmp_path)) == 2
    assert "hpc_hpo: error: no worker left to run trials: every worker retired (the last, rank 2 on node2: its " \
           "trial process failed to start 3 times in a row)" in capsys.readouterr().err


def test_a_second_signal_while_waiting_for_goodbyes_closes_the_file_then_ends_the_job(tmp_path):
    """The workers are inside inline trials and cannot say Bye; a second signal must not wait for them."""
    loop = None

    def answer(dest, message):
        if isinstance(message, Task):
            loop.stop_request.signum = signal.SIGTERM
        return []  # busy: no result, no Bye

    comm = FakeComm([1, 2], answer)
    loop = make_loop(tmp_path, comm)

    def second_signal():
        if loop._winding_down and not loop._end_now:
            loop.on_second_signal(signal.SIGTERM)

    comm.on_poll = second_signal
    started = time.monotonic()
    assert loop.run() == EXIT_INTERRUPTED
    assert comm.aborted == EXIT_INTERRUPTED
    assert time.monotonic() - started < 5  # far less than the 10 s grace it would otherwise wait
    assert read_results(tmp_path / "r.h5").runs[-1]["exit_code"] == EXIT_INTERRUPTED  # closed before the end


def test_a_failed_last_write_is_reported_and_resumable(tmp_path, capsys):
    def answer(dest, message):
        return [(dest, done(message))] if isinstance(message, Task) else bye_at_shutdown(dest, message)

    comm = FakeComm([1, 2], answer)
    loop = make_loop(tmp_path, comm)
    loop.writer.file = CloseFails(loop.writer.file)
    assert loop.run() == EXIT_RESUMABLE
    assert loop.writer.failed  # the process must end without HDF5's clean-up
    err = capsys.readouterr().err
    assert f"hpc_hpo: error: cannot write {tmp_path / 'r.h5'} (No space left on device); every trial stored " \
           f"before it is safe" in err


def test_a_failed_write_mid_run_stops_every_worker_without_recording_more(tmp_path, capsys):
    def answer(dest, message):
        return [(dest, done(message))] if isinstance(message, Task) else bye_at_shutdown(dest, message)

    comm = FakeComm([1, 2], answer)
    loop = make_loop(tmp_path, comm, trials=40, flush_interval=0.0)
    real_flush, calls = loop.writer._flush, []

    def flush(under_load):
        calls.append(1)
        if len(calls) > 3:
            raise OSError(28, "No space left on device")
        real_flush(under_load)

    loop.writer._flush = flush
    assert loop.run() == EXIT_RESUMABLE
    reason = f"cannot write {tmp_path / 'r.h5'} (No space left on device)"
    assert {(d, m) for d, m in comm.sent if isinstance(m, Stop)} == {(1, Stop(3, reason)), (2, Stop(3, reason))}
    assert "(No space left on device); every trial stored before it is safe" in capsys.readouterr().err
    loop.writer.abandon()
