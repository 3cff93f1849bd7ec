"""One job as rank 0 runs it: the experiment resolved, the workers started, the results file opened, the
dispatch loop run, and the job ended the way its outcome asks.

Start-up is checked before any trial runs, so bad input costs seconds and touches nothing:

1. resolve the experiment (file or Python keywords, flags, seed) and check the results path; on
   error every worker gets ``Stop(2)`` instead of ``Setup``;
2. start the workers (:mod:`hpc_hpo.run.startup`): each joins, is bound to its GPUs, imports the
   objective and says Hello, all within ``workers.startup_timeout``;
3. lock and open the results file (a new one, or the one a resume continues; every failed write
   from here on is one line and exit code 3), then run :class:`hpc_hpo.run.master.MasterLoop`.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections import Counter
from dataclasses import replace

from ..config import Config, apply_overrides, load_config, to_toml, with_population, with_seed
from ..errors import EXIT_INTERRUPTED, EXIT_USAGE, ConfigError, HpoError, ResultsWriteError, StartupTimeoutError
from ..logs import print_error
from ..results import checkpoints
from ..results.lockfile import ResultsLock
from ..results.paths import check_results_path
from ..results.resume import Previous, inspect_file, open_for_resume, stored_config
from ..results.writer import ResultsWriter
from ..trials.devices import Binding, Place, describe
from .comm import Comm
from .master import MasterLoop, write_error_line
from .options import Ended, RunOptions
from .protocol import Hello, Stop
from .signals import StopRequest
from .startup import Started, start_workers

log = logging.getLogger(__name__)


def resolve_config(options: RunOptions) -> Config:
    """The experiment to run: the file (or the default, or the one built by ``optimize``), flags applied, seed filled in.

    A resumed search keeps the seed stored in its results file unless one is given.
    """
    config = options.config if options.config is not None else load_config(options.config_path)
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


def stop_all(comm: Comm, exit_code: int, reason: str = "") -> None:
    for rank in comm.worker_ranks:
        comm.post(Stop(exit_code, reason), rank)


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


def _import_ahead(config: Config) -> None:
    """Import what the master's strategies need while the workers start, not once they have: scipy.stats (Sobol)
    costs the master 0.5-2.5 s of CPU, which delayed the first trials and was a tenth of a small run's /runs cost."""
    if any(phase.strategy == "sobol" for phase in config.phases):
        import scipy.stats  # noqa: F401, PLC0415 - the import is the point (see search.sampling.sobol_engine)


def run_master(comm: Comm, options: RunOptions, local_worker=None) -> Ended:
    """Run a whole experiment from rank 0; how it ended (the exit code for every rank, and why)."""
    try:
        config = resolve_config(options)
        _import_ahead(config)
        started = start_workers(comm, config)
    except StartupTimeoutError as exc:
        print_error(str(exc))
        comm.abort(EXIT_USAGE)  # the late ranks cannot hear a Stop: end them
        return Ended(EXIT_USAGE, str(exc))
    except HpoError as exc:
        print_error(str(exc))
        stop_all(comm, EXIT_USAGE, str(exc))
        return Ended(EXIT_USAGE, str(exc))

    workers = sum(1 for hello in started.hellos if started.bindings[hello.rank].takes_trials)
    resuming = config.experiment.resume and config.results_path.exists()
    config = with_population(config, workers, stored_config(config.results_path) if resuming else None)
    lock = ResultsLock(config.results_path)
    writer = None
    try:
        lock.acquire()
        labels = sorted({started.bindings[h.rank].label for h in started.hellos})
        writer, previous = open_results(config, options, len(comm.worker_ranks), comm.size, labels)
        if previous is None and any(phase.strategy == "pbt" for phase in config.phases):
            checkpoints.clear(config.experiment.workdir)  # a new file: the checkpoints of an old one must not mix in
        writer.start_run(world_size=comm.size, workers=len(comm.worker_ranks), host=socket.gethostname())
    except HpoError as exc:
        lock.release()
        failed_write = isinstance(exc, ResultsWriteError)
        message = write_error_line(str(exc)) if failed_write else str(exc)
        print_error(message)
        stop_all(comm, exc.exit_code, message)
        if failed_write:
            if writer is not None:
                writer.abandon()
            _exit_without_hdf5_cleanup(comm, exc.exit_code)
        return Ended(exc.exit_code, message)
    try:
        _log_start(config, started, comm.size)
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
    return Ended(code, loop.end_reason, config.results_path)


def _log_start(config: Config, started: Started, world_size: int) -> None:
    e = config.experiment
    log.info("experiment %s (%s): %d trials in %d phase%s, seed %d, results in %s", e.name, config.source,
             config.budget, len(config.phases), "s" if len(config.phases) > 1 else "", e.seed, config.results_path)
    log.info(describe_hosts(started.hellos, world_size))
    log_devices(started.places, started.bindings, started.warnings)


def _exit_without_hdf5_cleanup(comm: Comm, code: int) -> None:
    """After a failed write HDF5's own clean-up at exit can crash (seen: a segfault in H5D_close), so the
    process ends without it, once MPI is done."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    comm.close()
    os._exit(code)
