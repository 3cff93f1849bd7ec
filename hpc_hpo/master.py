"""The master driver: turns worker messages into scheduler events and instructions into messages.

Start-up is checked before any trial runs, so bad input costs seconds and touches nothing:

1. resolve the experiment (file, flags, seed) and check the results path; on error every
   worker gets ``Stop(2)`` instead of ``Setup``;
2. start the workers (:mod:`hpc_hpo.startup`): each joins, is bound to its GPUs, imports the
   objective and says Hello, all within ``workers.startup_timeout``;
3. lock and open the results file (a new one, or the one a resume continues), then dispatch
   until the scheduler says it is finished.

What finishes is durable: a result is in the file no later than ``flush_interval`` after it
reaches the master (the clock is checked after every message), and with one process before
the next trial starts. A stop (a signal, the time limit) tells every worker to stop and goes on
recording the results that still arrive until each has said Bye; only then is the file closed.
A write that fails, at any step from opening to closing, is one line and exit code 3.

The master never blocks in a receive (it polls with back-off) and never imports the
objective, so it stays light whatever the trials do.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace

from .comm import Backoff, Comm
from .config import Config, apply_overrides, load_config, to_toml, with_seed
from .devices import Binding, Place, describe
from .errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RESUMABLE,
    EXIT_USAGE,
    ConfigError,
    HpoError,
    ResultsWriteError,
    StartupTimeoutError,
)
from .executor import TrialAbandoned
from .lockfile import ResultsLock
from .progress import Every, ProgressReporter
from .protocol import Bye, Epoch, Hello, Interrupted, Result, Stop, Suggested, Task
from .records import format_duration
from .resume import Previous, inspect_file, open_for_resume
from .scheduler import Dispatch, Record, Scheduler, ShowRunning, StopWorker, TrialFinished, TrialStarted, WorkerReady
from .signals import StopRequest
from .startup import start_workers
from .store import ResultsWriter, check_results_path
from .walltime import job_end

log = logging.getLogger(__name__)

#: Bounds of the master's sleep between polls while it waits for results (see _adapt_sleep).
MIN_IDLE_SLEEP = 0.001
MAX_IDLE_SLEEP = 0.02
IDLE_SLEEP_FRACTION = 500
#: While results stream in, update the progress display every this many messages.
TICK_EVERY = 32
#: Seconds the master waits, after a stop, for every worker to say Bye before it ends the job.
SHUTDOWN_GRACE = 10.0


def _clock(when: float | None) -> str:
    return "-" if when is None else time.strftime("%H:%M:%S", time.localtime(when))


@dataclass(frozen=True)
class RunOptions:
    """What the ``run`` command line asks for."""

    config_path: str | None = None
    results: str | None = None
    seed: int | None = None
    trials: int | None = None
    overwrite: bool = False
    resume: bool = False
    force: bool = False
    time_limit: float | None = None
    time_margin: float = 60.0
    progress_every: Every = Every()  # seconds or trials between progress lines
    progress: str = "auto"  # "bar" on a terminal, "lines" in a batch log, "auto": bar if stderr is a terminal
    flush_interval: float = 0.1
    startup_timeout: float | None = None  # overrides workers.startup_timeout


def resolve_config(options: RunOptions) -> Config:
    """The experiment to run: the file (or the default), flags applied, seed filled in.

    A resumed search keeps the seed stored in its results file unless one is given.
    """
    config = load_config(options.config_path)
    config = apply_overrides(config, results=options.results, seed=options.seed, trials=options.trials,
                             startup_timeout=options.startup_timeout)
    if options.resume and not config.experiment.resume:
        config = replace(config, experiment=replace(config.experiment, resume=True))
    if options.force and not config.experiment.resume:
        raise ConfigError("--force: only with --resume (or resume = true in [experiment]): it lets a resume go on "
                          "despite a changed experiment")
    resuming = config.experiment.resume and config.results_path.exists()
    if resuming and config.experiment.seed < 0:
        attrs, _ = inspect_file(config.results_path)
        if attrs.get("seed") is not None:
            config = replace(config, experiment=replace(config.experiment, seed=int(attrs["seed"])))
    config = with_seed(config)
    check_results_path(config.results_path, options.overwrite or resuming)
    return config


def open_results(config: Config, options: RunOptions, slots: int, world_size: int,
                 gpu_labels: list[str] | None = None) -> tuple[ResultsWriter, Previous | None]:
    """The results file of this run: a new one, or the one a resumed search continues (its trials to run
    again already back in /running)."""
    e = config.experiment
    attrs = {"name": e.name, "objective": e.objective, "direction": e.direction, "seed": e.seed,
             "budget": config.budget, "world_size": world_size, "config": to_toml(config),
             "experiment_file": config.source}
    if e.resume and config.results_path.exists():
        return open_for_resume(config.results_path, config, slots, options.force, attrs, options.flush_interval)
    writer = ResultsWriter.create(config.results_path, config.space, slots=slots, overwrite=options.overwrite,
                                  flush_interval=options.flush_interval, attrs=attrs, gpu_labels=gpu_labels or ())
    return writer, None


def print_error(message: str) -> None:
    """Print the one line a user sees for bad input or a failed run (on stderr, once, by the master)."""
    print(f"hpc_hpo: error: {message}", file=sys.stderr, flush=True)


def write_error_line(error: str) -> str:
    """What a failed write says, whenever it happens (opening, mid-run, closing)."""
    return (f"{error}; every trial stored before it is safe (the next --resume recovers the file): free space or "
            f"fix the mount, then run again with --resume")


def stop_all(comm: Comm, exit_code: int) -> None:
    for rank in comm.worker_ranks:
        comm.post(Stop(exit_code), rank)


def describe_hosts(hellos: list[Hello], world_size: int) -> str:
    if world_size == 1:
        return f"one process on {socket.gethostname()} is master and worker (launch with mpirun for more workers)"
    per_host = Counter(h.host for h in hellos)
    master_host = socket.gethostname()
    hosts = ", ".join(f"{host} ({n} worker{'s' if n > 1 else ''})" for host, n in per_host.items())
    return f"{world_size} rank{'s' if world_size > 1 else ''}: master on {master_host}; {hosts}"


def log_devices(places: list[Place], bindings: dict[int, Binding], warnings: list[str]) -> None:
    """The rank -> host -> GPU map, once at start, and what does not match."""
    for line in describe(places, bindings):
        log.info("devices: %s", line)
    for warning in warnings:
        log.warning("devices: %s", warning)
    if not any(b.gpus for b in bindings.values()):
        threads = sorted({b.threads for b in bindings.values()})
        log.info("no GPU found (looked at CUDA_VISIBLE_DEVICES, /proc/driver/nvidia/gpus, nvidia-smi): trials run on "
                 "CPU, %s thread%s per worker", "/".join(map(str, threads)), "s" if threads != [1] else "")


def run_master(comm: Comm, options: RunOptions, local_worker=None) -> int:
    """Run a whole experiment from rank 0; return the exit code for every rank."""
    try:
        config = resolve_config(options)
        started = start_workers(comm, config)
    except StartupTimeoutError as exc:
        print_error(str(exc))
        comm.abort(EXIT_USAGE)  # the late ranks cannot hear a Stop: end them
        return EXIT_USAGE
    except HpoError as exc:
        print_error(str(exc))
        stop_all(comm, EXIT_USAGE)
        return EXIT_USAGE

    e = config.experiment
    lock = ResultsLock(config.results_path)
    writer = None
    try:
        lock.acquire()
        labels = sorted({started.bindings[h.rank].label for h in started.hellos})
        writer, previous = open_results(config, options, len(comm.worker_ranks), comm.size, labels)
        writer.start_run(world_size=comm.size, workers=len(comm.worker_ranks), host=socket.gethostname())
    except HpoError as exc:
        lock.release()
        failed_write = isinstance(exc, ResultsWriteError)
        print_error(write_error_line(str(exc)) if failed_write else str(exc))
        stop_all(comm, exc.exit_code)
        if failed_write:
            if writer is not None:
                writer.abandon()
            _exit_without_hdf5_cleanup(comm, exc.exit_code)
        return exc.exit_code
    try:
        log.info("experiment %s (%s): %d trials in %d phase%s, seed %d, results in %s", e.name, config.source,
                 config.budget, len(config.phases), "s" if len(config.phases) > 1 else "", e.seed,
                 config.results_path)
        log.info(describe_hosts(started.hellos, comm.size))
        log_devices(started.places, started.bindings, started.warnings)
        stop_request = StopRequest(on_second=lambda signum: comm.abort(EXIT_INTERRUPTED)).install()
        if local_worker is not None:  # one process: the worker's trials listen to the same signals
            local_worker.stop_request = stop_request
            local_worker.abandon = lambda: stop_request.requested
        loop = MasterLoop(comm, config, writer, started.hellos, options, started.bindings, previous, stop_request)
        stop_request.on_second = loop.on_second_signal
        code = loop.run()
    finally:
        lock.release()
    if writer.failed:
        _exit_without_hdf5_cleanup(comm, code)
    return code


def _exit_without_hdf5_cleanup(comm: Comm, code: int) -> None:
    """After a failed write HDF5's own clean-up at exit can crash (seen: a segfault in H5D_close), so the
    process ends without it, once MPI is done."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    comm.close()
    os._exit(code)


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
            self.scheduler.restore(previous.trials, previous.rerun, previous.next_id)
            p = self.scheduler.progress
            log.info("resuming %s: %d of %d trials finished (%d failed), %d to run again, %d to go", config.results_path,
                     p.finished, p.budget, p.failed, len(previous.rerun), max(0, p.budget - p.finished))
        bar = options.progress == "bar" or (options.progress == "auto" and sys.stderr.isatty())
        self.reporter = ProgressReporter(self.scheduler.progress, every=options.progress_every, bar=bar)
        self.slots = {rank: i for i, rank in enumerate(comm.worker_ranks)}
        self._typical_duration = 0.0
        self._waiting_shown = False
        self.interrupted_by = ""  # a worker's Interrupted message, as a reason
        self.write_error = ""
        self._wound_down = False
        self._winding_down = False  # in the wind-down's loop: a second signal closes the file, then ends the job
        self._end_now = False
        self.stop_request = stop_request or StopRequest(on_second=lambda signum: comm.abort(EXIT_INTERRUPTED))

    def apply(self, instructions) -> None:
        for instruction in instructions:
            kind = type(instruction)
            if kind is Dispatch:
                trial, suggest = instruction
                self.writer.set_running(self.slots[trial.rank], trial)
                task = Task(trial.trial_id, trial.params, trial.phase, trial.strategy,
                            None if suggest is None else tuple(suggest))
                if self.comm.in_process and self.writer.dirty:
                    self.writer.flush()  # the trial runs inside this send: what finished before it is stored first
                self.comm.send(task, trial.rank)
            elif kind is Record:
                self.writer.set_running(self.slots[instruction.trial.rank], None)
                self.writer.append(instruction.trial)
                self.reporter.trial(instruction.trial)
            elif kind is ShowRunning:
                self.writer.set_running(self.slots[instruction.trial.rank], instruction.trial)
            elif kind is StopWorker:
                self.writer.set_running(self.slots[instruction.rank], None)
                self.comm.send(Stop(instruction.exit_code), instruction.rank)
            else:
                raise TypeError(f"unknown instruction {instruction!r}")

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
        elif kind is Epoch:
            self.writer.append_epoch(message.trial_id, message.epoch, message.metrics, message.time)
        elif kind is Bye:
            pass  # a worker the scheduler stopped at the time limit, leaving
        elif kind is Interrupted:
            self.interrupted_by = f"rank {source} got {signal.Signals(message.signal).name}"
        else:
            raise RuntimeError(f"expected a Result or Suggested from rank {source}, got {message!r}")

    def _adapt_sleep(self, backoff: Backoff, duration: float) -> None:
        """Sleep longer while waiting when trials are long: added latency stays <= 0.2% of a trial.

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
                    self.comm.send(Stop(exit_code), rank)
        except ResultsWriteError as exc:  # a full disk, a read-only mount, a quota
            self.write_error = str(exc)
            stop_reason, exit_code = self.write_error, EXIT_RESUMABLE
        finally:
            p = scheduler.progress
            try:
                writer.close(exit_code, trials=p.finished)
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
            received = comm.poll()
            if received is None:
                # Idle: a good moment to write, once the wait is longer than a short spin.
                if writer.due(idle=backoff.idle_for >= backoff.spin):
                    writer.flush()
                self.reporter.tick(len(scheduler.running))
                backoff.wait()
                continue
            backoff.reset()
            source, message = received
            self.handle(source, message)
            if type(message) is Result:
                self._adapt_sleep(backoff, message.t_end - message.t_start)
            if writer.due(idle=False):  # under a flood of results: written at least every flush_interval
                writer.flush()
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
            self.comm.send(Stop(EXIT_RESUMABLE), rank)
        waiting, until = set(serving), time.monotonic() + SHUTDOWN_GRACE
        backoff = Backoff(spin=0.001, max_sleep=0.01)
        self._winding_down = True
        while waiting and time.monotonic() < until and not self._end_now:
            received = self.comm.poll()
            if received is None:
                if record and self.writer.due(idle=True):
                    self.writer.flush()
                backoff.wait()
                continue
            backoff.reset()
            source, message = received
            if type(message) is Bye:
                waiting.discard(source)
            elif record:
                self.handle(source, message)
                if self.writer.due(idle=False):
                    self.writer.flush()
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
