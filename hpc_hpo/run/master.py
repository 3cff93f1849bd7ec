"""The master's dispatch loop: turns worker messages into scheduler events and instructions into messages.

:mod:`hpc_hpo.run.job` gets it going (experiment, workers, results file); this module runs it.
What finishes is durable: a result is in the file no later than ``flush_interval`` after it
reaches the master (the clock is checked after every message), and with one process before
the next trial starts. A stop (a signal, the time limit) tells every worker to stop and goes on
recording the results that still arrive until each has said Bye; only then is the file closed.
A write that fails, at any step from opening to closing, is one line and exit code 3.

The master never blocks in a receive (it polls with back-off) and never imports the
objective, so it stays light whatever the trials do.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ..batch.walltime import job_end
from ..config import Config
from ..errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RESUMABLE,
    ResultsWriteError,
    TrialAbandoned,
)
from ..logs import print_error
from ..results import checkpoints
from ..results.records import DONE, PRUNED, format_duration
from ..results.resume import Previous
from ..results.writer import ResultsWriter
from ..trials.devices import Binding
from .comm import Backoff, Comm
from .options import RunOptions
from .progress import ProgressReporter
from .protocol import Bye, Epoch, Hello, Interrupted, Refresh, Result, Stop, Suggested, Task, Update, Verdict
from .scheduler import (
    Dispatch,
    EpochReported,
    Judge,
    Record,
    RefreshAsked,
    RemoveCheckpoints,
    Scheduler,
    SendUpdate,
    ShowRunning,
    StopWorker,
    TrialFinished,
    TrialStarted,
    Warn,
    WorkerReady,
)
from .signals import StopRequest

log = logging.getLogger(__name__)

#: Bounds of the master's sleep between polls while it waits for results (see _adapt_sleep).
MIN_IDLE_SLEEP = 0.001
MAX_IDLE_SLEEP = 0.02
IDLE_SLEEP_FRACTION = 500
#: While results stream in, update the progress display every this many messages.
TICK_EVERY = 32
#: The rank of the in-process worker when one process plays both roles.
MASTER_RANK = 0
#: Seconds the master waits, after a stop, for every worker to say Bye before it ends the job.
SHUTDOWN_GRACE = 10.0
#: The master's first garbage-collector threshold (Python's default is 700): see :func:`collector_for_the_loop`.
MASTER_GC_THRESHOLD = 10_000


@contextmanager
def collector_for_the_loop(enabled: bool = True) -> Iterator[None]:
    """Python's garbage collector set for a master that keeps thousands of trials in flight; as it was after.

    The collector runs when container objects allocated minus those freed pass a threshold (700), and then
    visits every young container and what each one refers to. A master's loop frees about what it allocates,
    but each result's new objects refer to the trial's state made when it was handed out, with thousands of
    workers long gone from the caches: at 16,384 workers the young collections took 0.6 and 5 ms each against
    0.15 and 0.2 ms at 8 (2-8 us a result in all, 0.4-1.4 us at 8), and a full collection visited every object
    of the process (imports included), 50-70 ms. So, for the loop: what exists when it starts (modules, the
    workers' greetings, the configuration) is frozen out of the collector's reach (``gc.freeze``), and the
    first threshold is 10,000, which a loop that frees what it allocates does not reach, while a leak of
    containers still is collected after 10,000. Not in one process, where the trials (TensorFlow's objects
    included) run in the same interpreter and keep Python's defaults (docs/performance.md, The master at
    scale).
    """
    if not enabled:
        yield
        return
    thresholds = gc.get_threshold()
    freeze = gc.get_freeze_count() == 0  # a script that froze objects itself keeps them frozen, and only those
    if freeze:
        gc.freeze()
    gc.set_threshold(MASTER_GC_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        if freeze:
            gc.unfreeze()


def _clock(when: float | None) -> str:
    return "-" if when is None else time.strftime("%H:%M:%S", time.localtime(when))


def write_error_line(error: str) -> str:
    """What a failed write says, whenever it happens (opening, mid-run, closing)."""
    return (f"{error}; every trial stored before it is safe (the next --resume recovers the file): free space or "
            f"fix the mount, then run again with --resume")


class MasterLoop:
    """The dispatch loop: poll, hand events to the scheduler, carry out its instructions."""

    def __init__(self, comm: Comm, config: Config, writer: ResultsWriter, hellos: list[Hello], options: RunOptions,
                 bindings: dict[int, Binding] | None = None, previous: Previous | None = None,
                 stop_request: StopRequest | None = None):
        self.comm = comm
        self.config = config
        self.writer = writer
        self.bindings = bindings or {h.rank: Binding(h.rank) for h in hellos}
        self.hellos = [h for h in hellos if self.bindings[h.rank].takes_trials]
        #: Ranks that take no trials (GPU group members, spares): stopped when the run ends.
        self.resting = [h.rank for h in hellos if not self.bindings[h.rank].takes_trials]
        self.job_end = job_end(options.time_limit)
        self.margin = options.time_margin
        self.deadline = None if self.job_end is None else self.job_end.end - self.margin
        if self.job_end is not None:
            log.info("job ends at %s (%s): trials are handed out only if they should end by %s", _clock(self.job_end.end),
                     self.job_end.source, _clock(self.deadline))
        self.scheduler = Scheduler.from_config(config, deadline=self.deadline)
        if previous is not None:
            reports = previous.reports(config.stopping.metric) if config.stopping.active else ()
            self.scheduler.restore(previous.trials, previous.rerun, previous.next_id, reports)
            p = self.scheduler.progress
            log.info("resuming %s: %d of %d trials finished (%d failed), %d to run again, %d to go", config.results_path,
                     p.finished, p.budget, p.failed, len(previous.rerun), max(0, p.budget - p.finished))
        bar = options.progress == "bar" or (options.progress == "auto" and sys.stderr.isatty())
        self.reporter = ProgressReporter(self.scheduler.progress, every=options.progress_every, bar=bar)
        #: Each worker's row of /running, by rank: a list, as a dict's lookup of one of thousands of ranks costs more
        #: cache misses (its index, its entry, the key), and this is read twice a result. None for a rank that is no
        #: worker, so that a slot asked for it fails loudly instead of writing another worker's row.
        ranks = comm.worker_ranks
        self.slots: list[int | None] = [None] * (max(ranks, default=0) + 1)
        for i, rank in enumerate(ranks):
            self.slots[rank] = i
        self._typical_duration = 0.0
        #: CPU seconds spent looking for messages that had not come (the polls and sleeps while idle): with MPI a
        #: poll costs more the more peers and the fewer free cores; /runs keeps it beside the master's whole CPU time.
        self.wait_cpu = 0.0
        self._waiting_shown = False
        self.interrupted_by = ""  # a worker's Interrupted message, as a reason
        self.write_error = ""
        self._wound_down = False
        self.end_reason = ""  # why the run did not finish: the error line, or what stopped it
        self._winding_down = False  # in the wind-down's loop: a second signal closes the file, then ends the job
        self._end_now = False
        self.stop_request = stop_request or StopRequest(on_second=lambda signum: comm.abort(EXIT_INTERRUPTED))
        self._metric_seen = not config.stopping.active  # some trial reported the stopping metric (or warned none did)
        self._reported_names: set[str] = set()
        #: With a stopping rule, trials wait at their rungs for the master: its sleeps follow epochs, not trials.
        self.judging = config.stopping.active
        self._last_report: dict[int, float] = {}  # rank -> when its trial last reported an epoch
        self._unneeded: list[int] = []  # pbt checkpoints to remove after the next flush
        if comm.in_process:  # one process: a reported epoch is judged while its trial runs, inside this send
            comm.urgent = lambda message: self.handle(MASTER_RANK, message)

    def apply(self, instructions) -> None:
        for instruction in instructions:
            kind = type(instruction)
            if kind is Dispatch:
                trial, suggest, base = instruction
                self.writer.set_running(self.slots[trial.rank], trial)
                segment = (trial.member, trial.parent, trial.start_epoch, trial.end_epoch) if trial.segment else ()
                task = Task(trial.trial_id, trial.params if base is None else base, trial.phase, trial.strategy,
                            None if suggest is None else tuple(suggest), self.scheduler.rungs_for(trial.trial_id),
                            segment)
                if self.comm.in_process and self.writer.dirty:
                    self._flush()  # the trial runs inside this send: what finished before it is stored first
                self.comm.send(task, trial.rank)
            elif kind is Judge:
                self.comm.send(Verdict(instruction.trial_id, instruction.epoch, instruction.stop), instruction.rank)
            elif kind is SendUpdate:  # without waiting: the worker takes it at its next poll, while its trial runs
                self.comm.post(Update(instruction.trial_id, tuple(instruction.suggest)), instruction.rank)
            elif kind is Record:
                self._check_metric(instruction.trial)
                self.writer.set_running(self.slots[instruction.trial.rank], None)
                self.writer.append(instruction.trial)
                self.reporter.trial(instruction.trial)
            elif kind is ShowRunning:
                self.writer.set_running(self.slots[instruction.trial.rank], instruction.trial)
            elif kind is Warn:
                log.warning(instruction.text)
            elif kind is RemoveCheckpoints:  # once the rows that free them are stored (a kill before must not lose them)
                self._unneeded.extend(instruction.trial_ids)
            elif kind is StopWorker:
                self.writer.set_running(self.slots[instruction.rank], None)
                reason = self.scheduler.error if instruction.exit_code else ""
                self.comm.send(Stop(instruction.exit_code, reason), instruction.rank)
            else:
                raise TypeError(f"unknown instruction {instruction!r}")

    def _flush(self, under_load: bool = False) -> None:
        """Write what is buffered (``under_load``: a flush that fell due, see :meth:`ResultsWriter.flush`); then
        remove the checkpoints those rows freed."""
        self.writer.flush(under_load)
        self._remove_unneeded()

    def _remove_unneeded(self) -> None:
        """Remove the pbt checkpoints no segment needs any more, now that the rows saying so are stored: were they
        removed first, a kill before the flush would resume segments whose checkpoints are gone."""
        if self._unneeded:
            checkpoints.remove(self.config.experiment.workdir, self._unneeded)
            self._unneeded = []

    def handle(self, source: int, message) -> None:
        """Turn one worker message into scheduler events (or a note, or a row of /epochs)."""
        kind = type(message)
        if kind is Result:
            self.apply(self.scheduler.handle(TrialFinished(source, message), time.time()))
            if message.retire:
                self._log_retired(source, message.retire)
            if self._waiting_shown:
                self._show_waiting()
        elif kind is Suggested:
            started = TrialStarted(source, message.trial_id, message.params, message.seconds)
            self.apply(self.scheduler.handle(started, time.time()))
        elif kind is Refresh:
            self.apply(self.scheduler.handle(RefreshAsked(source, message.trial_id), time.time()))
        elif kind is Epoch:
            self.writer.append_epoch(message.trial_id, message.epoch, message.metrics, message.time)
            if not self._metric_seen:
                self._metric_seen = self.config.stopping.metric in message.metrics
                self._reported_names.update(message.metrics)
            if message.metrics:
                self.apply(self.scheduler.handle(EpochReported(source, message.trial_id, message.epoch,
                                                               message.metrics), 0.0))
        elif kind is Bye:
            pass  # a worker the scheduler stopped at the time limit, leaving
        elif kind is Interrupted:
            self.interrupted_by = f"rank {source} got {signal.Signals(message.signal).name}"
        else:
            raise RuntimeError(f"expected a worker's message from rank {source}, got {message!r}")

    def _check_metric(self, trial) -> None:
        """Warn once, at the first trial that finished, if no trial reported the stopping rule's metric so far."""
        if self._metric_seen or trial.status not in (DONE, PRUNED):
            return
        self._metric_seen = True
        metric = self.config.stopping.metric
        if trial.epochs == 0:
            log.warning("stopping.metric: trial %d finished without reporting any epoch: no trial can be stopped early "
                        "(call trial.report(epoch, {%r: ...}) after each epoch, or use hpc_hpo.tf.epoch_callback)",
                        trial.trial_id, metric)
        else:
            log.warning("stopping.metric: trial %d reported %d epochs but never %r: no trial can be stopped early "
                        "(got %s; check the name in [stopping])", trial.trial_id, trial.epochs, metric,
                        ", ".join(sorted(self._reported_names)) or "no metric")

    def _adapt_sleep(self, backoff: Backoff, duration: float) -> None:
        """Sleep longer while waiting when trials are long: added latency stays <= 0.2% of a trial (of an epoch
        with a stopping rule, whose verdicts trials wait for).

        With 1-second trials that is 2 ms: the master answers a result in ~4 ms instead of ~8.5
        with 5 ms sleeps (worker utilisation +0.6 points in a Bayesian run), and costs 3.0-3.1%
        of a core while 8 workers run (2.3-2.9% with 5 ms).
        """
        typical = self._typical_duration
        self._typical_duration = duration if typical == 0.0 else 0.9 * typical + 0.1 * duration
        backoff.max_sleep = min(MAX_IDLE_SLEEP, max(MIN_IDLE_SLEEP, self._typical_duration / IDLE_SLEEP_FRACTION))

    def run(self) -> int:
        """Dispatch until the search is finished or must stop; close the file; return the exit code."""
        scheduler, writer = self.scheduler, self.writer
        exit_code = EXIT_FAILED  # what /runs records if the loop dies of an internal error
        stop_reason = ""
        busy: set[int] = set()  # ranks still serving after a stop: the job is ended for them
        try:
            try:
                with collector_for_the_loop(enabled=not self.comm.in_process):
                    for hello in self.hellos:
                        gpus = self.bindings[hello.rank].label
                        self.apply(scheduler.handle(WorkerReady(hello.rank, hello.host, gpus), time.time()))
                    self._show_waiting()
                    stop_reason = self._dispatch()
            except TrialAbandoned:  # one process: a stop signal ended the trial running in this process
                stop_reason = f"got {self.stop_request.name}"
            if stop_reason:
                busy = self._wind_down(stop_reason, record=True)
                exit_code = EXIT_INTERRUPTED if self._end_now else EXIT_RESUMABLE
            else:
                exit_code = scheduler.exit_code
                for rank in self.resting:
                    self.comm.send(Stop(exit_code, scheduler.error), rank)
        except ResultsWriteError as exc:  # a full disk, a read-only mount, a quota
            self.write_error = str(exc)
            stop_reason, exit_code = self.write_error, EXIT_RESUMABLE
        finally:
            p = scheduler.progress
            try:
                writer.close(exit_code, trials=p.finished, wait_cpu=self.wait_cpu)
                self._remove_unneeded()
            except ResultsWriteError as exc:
                if not self.write_error:
                    self.write_error = str(exc)
                    exit_code = EXIT_RESUMABLE
                    stop_reason = stop_reason or self.write_error
        self.reporter.close()
        if self.write_error and not self._wound_down:  # the file takes no more: stop every rank, record nothing
            busy = self._wind_down(stop_reason, record=False)
        if self._end_now:
            log.warning("a second stop signal: the file is closed, ending every rank at once")
            self.comm.abort(EXIT_INTERRUPTED)
        elif busy:
            log.warning("rank%s %s still busy %g s after the stop (an inline trial ends only at a signal); ending the "
                        "job", "s" if len(busy) > 1 else "", ", ".join(map(str, sorted(busy))), SHUTDOWN_GRACE)
            self.comm.abort(EXIT_RESUMABLE)
        self._report_end(exit_code, stop_reason)
        self.end_reason = (write_error_line(self.write_error) if self.write_error else
                           self.scheduler.error or stop_reason)
        return exit_code

    def _dispatch(self) -> str:
        """Hand out trials and take results until the scheduler is finished (""), or why the job must stop."""
        scheduler, writer, comm = self.scheduler, self.writer, self.comm
        backoff = Backoff()
        handled = 0
        while not scheduler.finished:
            stop_reason = self._stop_reason()
            if stop_reason:
                return stop_reason
            polled = time.process_time()
            received = comm.poll()
            if received is None:
                # Idle: a good moment to write, once the wait is longer than a short spin.
                waited = time.process_time() - polled
                if writer.due(idle=backoff.idle_for >= backoff.spin):
                    self._flush(under_load=True)
                self.reporter.tick(len(scheduler.running))
                polled = time.process_time()
                backoff.wait()
                self.wait_cpu += waited + time.process_time() - polled
                continue
            backoff.reset()
            source, message = received
            self.handle(source, message)
            if type(message) is Result and not self.judging:
                self._adapt_sleep(backoff, message.t_end - message.t_start)
            elif type(message) is Epoch and self.judging:  # trials wait for verdicts: answer within ~0.2% of an epoch
                previous = self._last_report.get(source)
                self._last_report[source] = message.time
                if previous is not None and message.time > previous:
                    self._adapt_sleep(backoff, message.time - previous)
            if writer.due(idle=False):  # under a flood of results: written at least every flush_interval
                self._flush(under_load=True)
            handled += 1
            if handled % TICK_EVERY == 0:
                self.reporter.tick(len(scheduler.running))
        return ""

    def _wind_down(self, reason: str, record: bool) -> set[int]:
        """Stop every rank still serving, and until each has said Bye (at most SHUTDOWN_GRACE seconds) keep
        recording what arrives: results of trials that finished meanwhile are stored, not run again.
        Returns the ranks that did not say Bye in time."""
        self._wound_down = True
        finished_before = self.scheduler.progress.finished
        serving = self.scheduler.shutdown(EXIT_RESUMABLE) + self.resting
        self.resting = []
        for rank in serving:
            self.comm.send(Stop(EXIT_RESUMABLE, reason), rank)
        waiting, until = set(serving), time.monotonic() + SHUTDOWN_GRACE
        backoff = Backoff(spin=0.001, max_sleep=0.01)
        self._winding_down = True
        while waiting and time.monotonic() < until and not self._end_now:
            received = self.comm.poll()
            if received is None:
                if record and self.writer.due(idle=True):
                    self._flush(under_load=True)
                backoff.wait()
                continue
            backoff.reset()
            source, message = received
            if type(message) is Bye:
                waiting.discard(source)
            elif record:
                self.handle(source, message)
                if self.writer.due(idle=False):
                    self._flush(under_load=True)
        self._winding_down = False
        running = sorted(t.trial_id for t in self.scheduler.running.values())
        arrived = self.scheduler.progress.finished - finished_before
        log.warning("%s: stopping; %s%d running trial%s (%s) will run again on --resume", reason,
                    f"{arrived} trial{'s' if arrived != 1 else ''} finished meanwhile and stored; " if arrived else "",
                    len(running), "" if len(running) == 1 else "s", ", ".join(map(str, running)) or "none")
        return waiting

    def _report_end(self, exit_code: int, stop_reason: str) -> None:
        scheduler = self.scheduler
        if self.write_error:
            print_error(write_error_line(self.write_error))
        elif scheduler.out_of_time:
            log.warning("stopped at the time limit: no time for another trial before %s (trials take up to %s); "
                        "run again with --resume to continue", _clock(self.deadline), format_duration(
                            scheduler.expected_duration()))
        if scheduler.error:
            print_error(scheduler.error)
        ended = {EXIT_OK: "finished", EXIT_RESUMABLE: "stopped"}.get(exit_code, "gave up")
        log.info("%s: %s", ended, self.reporter.line(0, time_left=False))
        p = scheduler.progress
        if p.best_trial is not None:
            log.info("best trial %d: %.6g", p.best_trial, p.best_value)
        log.info("results in %s", self.config.results_path)

    def _log_retired(self, rank: int, reason: str) -> None:
        left = len(self.scheduler.hosts) - len(self.scheduler.stopped)
        goes_on = f"; the search goes on with {left} worker{'' if left == 1 else 's'}" if left else ""
        log.warning("worker rank %d (%s) retired: %s%s", rank, self.scheduler.hosts.get(rank, "?"), reason, goes_on)

    def on_second_signal(self, signum: int) -> None:
        """A second stop signal: end the job at once; while the wind-down waits, close the file first (a few ms)."""
        if self._winding_down:
            self._end_now = True
        else:
            self.comm.abort(EXIT_INTERRUPTED)

    def _stop_reason(self) -> str:
        """Why the job must end now, or "": a stop signal here or on a worker, or the time limit."""
        if self.stop_request.requested:
            return f"got {self.stop_request.name}"
        if self.interrupted_by:
            return self.interrupted_by
        if self.deadline is not None and time.time() >= self.deadline:
            return f"time limit reached ({self.job_end.source}, less the {self.margin:g} s margin)"
        return ""

    def _show_waiting(self) -> None:
        """Keep trials to run again, not yet handed out, visible in /running (they survive a kill)."""
        waiting = list(self.scheduler.waiting_reruns)
        if waiting or self._waiting_shown:
            self.writer.set_waiting(waiting)
        self._waiting_shown = bool(waiting)
