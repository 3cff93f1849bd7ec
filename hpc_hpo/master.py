"""The master driver: turns worker messages into scheduler events and instructions into messages.

Start-up is checked before any trial runs, so bad input costs seconds and touches nothing:

1. resolve the experiment (file, flags, seed), check the results path, and bind each worker
   to its GPUs (:func:`hpc_hpo.devices.assign`); on error every worker gets ``Stop(2)``
   instead of ``Setup``;
2. send ``Setup`` (config and binding) to every worker and wait for each ``Hello`` (the
   worker has imported the objective); if any worker failed to, everyone stops with code 2;
3. create the results file, then dispatch until the scheduler says it is finished.

The master never blocks in a receive (it polls with back-off) and never imports the
objective, so it stays light whatever the trials do.
"""

from __future__ import annotations

import logging
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass

from .comm import Backoff, Comm
from .config import Config, apply_overrides, load_config, to_toml, with_seed
from .devices import Binding, Place, assign, describe, local_place
from .errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, ConfigError, HpoError
from .progress import ProgressReporter
from .protocol import Epoch, Hello, Result, Setup, Stop, Suggested, Task
from .scheduler import Dispatch, Record, Scheduler, ShowRunning, StopWorker, TrialFinished, TrialStarted, WorkerReady
from .store import ResultsWriter, check_results_path

log = logging.getLogger(__name__)

#: Bounds of the master's sleep between polls while it waits for results (see _adapt_sleep).
MIN_IDLE_SLEEP = 0.001
MAX_IDLE_SLEEP = 0.02
IDLE_SLEEP_FRACTION = 500
#: While results stream in, look at the clock (flush due? progress line due?) every this many.
CHECK_EVERY = 32


@dataclass(frozen=True)
class RunOptions:
    """What the ``run`` command line asks for."""

    config_path: str | None = None
    results: str | None = None
    seed: int | None = None
    trials: int | None = None
    overwrite: bool = False
    progress_every: float = 10.0
    flush_interval: float = 0.1


def resolve_config(options: RunOptions) -> Config:
    """The experiment to run: the file (or the default), flags applied, seed filled in."""
    config = load_config(options.config_path)
    config = apply_overrides(config, results=options.results, seed=options.seed, trials=options.trials)
    config = with_seed(config)
    check_results_path(config.results_path, options.overwrite)
    return config


def fail(message: str) -> None:
    """The one line a user sees for bad input or a failed run."""
    print(f"hpc_hpo: error: {message}", file=sys.stderr, flush=True)


def stop_all(comm: Comm, exit_code: int) -> None:
    for rank in comm.worker_ranks:
        comm.send(Stop(exit_code), rank)


def gather_hellos(comm: Comm) -> list[Hello]:
    """Wait (polling) until every worker has said Hello."""
    hellos: dict[int, Hello] = {}
    backoff = Backoff(spin=0.001, max_sleep=0.01)
    waiting_since = time.monotonic()
    warned = False
    while len(hellos) < len(comm.worker_ranks):
        received = comm.poll()
        if received is None:
            if not warned and time.monotonic() - waiting_since > 30:
                missing = sorted(set(comm.worker_ranks) - set(hellos))
                log.info("still waiting for ranks %s to load the objective", missing)
                warned = True
            backoff.wait()
            continue
        source, message = received
        if not isinstance(message, Hello):
            raise RuntimeError(f"expected Hello from rank {source}, got {message!r}")
        hellos[source] = message
        backoff.reset()
    return [hellos[rank] for rank in comm.worker_ranks]


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


def run_master(comm: Comm, options: RunOptions, places: list[Place] | None = None) -> int:
    """Run a whole experiment from rank 0; return the exit code for every rank."""
    places = places or [local_place(0)]
    try:
        config = resolve_config(options)
        w = config.workers
        bindings, warnings = assign(places, w.gpus_per_trial, w.workers_per_gpu, w.threads)
    except ConfigError as exc:
        fail(str(exc))
        stop_all(comm, EXIT_USAGE)
        return EXIT_USAGE

    for rank in comm.worker_ranks:
        comm.send(Setup(config, bindings[rank]), rank)
    hellos = gather_hellos(comm)
    errors = [h.error for h in hellos if h.error]
    if errors:
        more = f" (and {len(errors) - 1} more rank{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        fail(errors[0] + more)
        stop_all(comm, EXIT_USAGE)
        return EXIT_USAGE

    e = config.experiment
    try:
        writer = ResultsWriter.create(
            config.results_path, config.space, slots=len(comm.worker_ranks), overwrite=options.overwrite,
            flush_interval=options.flush_interval,
            attrs={"name": e.name, "objective": e.objective, "direction": e.direction, "seed": e.seed,
                   "budget": config.budget, "world_size": comm.size, "config": to_toml(config),
                   "experiment_file": config.source},
        )
    except HpoError as exc:
        fail(str(exc))
        stop_all(comm, exc.exit_code)
        return exc.exit_code
    writer.start_run(world_size=comm.size, workers=len(comm.worker_ranks), host=socket.gethostname())
    log.info("experiment %s (%s): %d trials in %d phase%s, seed %d, results in %s", e.name, config.source,
             config.budget, len(config.phases), "s" if len(config.phases) > 1 else "", e.seed, config.results_path)
    log.info(describe_hosts(hellos, comm.size))
    log_devices(places, bindings, warnings)
    return MasterLoop(comm, config, writer, hellos, options, bindings).run()


class MasterLoop:
    """The dispatch loop: poll, hand events to the scheduler, carry out its instructions."""

    def __init__(self, comm: Comm, config: Config, writer: ResultsWriter, hellos: list[Hello], options: RunOptions,
                 bindings: dict[int, Binding] | None = None):
        self.comm = comm
        self.config = config
        self.writer = writer
        self.bindings = bindings or {h.rank: Binding(h.rank) for h in hellos}
        self.hellos = [h for h in hellos if self.bindings[h.rank].takes_trials]
        #: Ranks that take no trials (GPU group members, spares): stopped when the run ends.
        self.resting = [h.rank for h in hellos if not self.bindings[h.rank].takes_trials]
        self.scheduler = Scheduler.from_config(config)
        self.reporter = ProgressReporter(self.scheduler.progress, every=options.progress_every)
        self.slots = {rank: i for i, rank in enumerate(comm.worker_ranks)}
        self._typical_duration = 0.0

    def apply(self, instructions) -> None:
        for instruction in instructions:
            kind = type(instruction)
            if kind is Dispatch:
                trial, suggest = instruction
                self.writer.set_running(self.slots[trial.rank], trial)
                task = Task(trial.trial_id, trial.params, trial.phase, trial.strategy,
                            None if suggest is None else tuple(suggest))
                self.comm.send(task, trial.rank)
            elif kind is Record:
                self.writer.append(instruction.trial)
                self.reporter.trial(instruction.trial)
            elif kind is ShowRunning:
                self.writer.set_running(self.slots[instruction.trial.rank], instruction.trial)
            elif kind is StopWorker:
                self.writer.set_running(self.slots[instruction.rank], None)
                self.comm.send(Stop(instruction.exit_code), instruction.rank)
            else:
                raise TypeError(f"unknown instruction {instruction!r}")

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
        scheduler, writer, comm = self.scheduler, self.writer, self.comm
        loop_start, cpu_start = time.monotonic(), time.process_time()
        exit_code = EXIT_FAILED  # what /runs records if the loop dies of an internal error
        try:
            for hello in self.hellos:
                gpus = self.bindings[hello.rank].label
                self.apply(scheduler.handle(WorkerReady(hello.rank, hello.host, gpus), time.time()))
            backoff = Backoff()
            handled = 0
            while not scheduler.finished:
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
                kind = type(message)
                if kind is Result:
                    self.apply(scheduler.handle(TrialFinished(source, message), time.time()))
                    self._adapt_sleep(backoff, message.t_end - message.t_start)
                elif kind is Suggested:
                    started = TrialStarted(source, message.trial_id, message.params, message.seconds)
                    self.apply(scheduler.handle(started, time.time()))
                elif kind is Epoch:
                    writer.append_epoch(message.trial_id, message.epoch, message.metrics, message.time)
                else:
                    raise RuntimeError(f"expected a Result or Suggested from rank {source}, got {message!r}")
                handled += 1
                if handled % CHECK_EVERY == 0:  # under a flood of results: write at least every flush_interval
                    if writer.due(idle=False):
                        writer.flush()
                    self.reporter.tick(len(scheduler.running))
            exit_code = scheduler.exit_code
            for rank in self.resting:
                comm.send(Stop(exit_code), rank)
        except KeyboardInterrupt:
            exit_code = EXIT_INTERRUPTED
            raise
        finally:
            p = scheduler.progress
            writer.close(exit_code, trials=p.finished, loop_seconds=time.monotonic() - loop_start,
                         master_cpu_seconds=time.process_time() - cpu_start)
        if scheduler.error:
            fail(scheduler.error)
        log.info("finished: %s", self.reporter.line(0))
        if p.best_trial is not None:
            log.info("best trial %d: %.6g", p.best_trial, p.best_value)
        log.info("results in %s", self.config.results_path)
        return exit_code
