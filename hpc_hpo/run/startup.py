"""The master's side of start-up: every worker joins, is set up and says Hello, within a deadline.

1. each worker's first message, ``Join``, says which install it runs and where it runs; a rank of
   another hpc_hpo install is refused before anything it sent is unpickled;
2. the master binds every worker to its GPUs (:func:`hpc_hpo.trials.devices.assign`) and posts each its
   ``Setup`` (a non-blocking send: a large message never waits for a rank that hangs);
3. each worker applies its binding, imports the objective (starting its first trial process) and
   says ``Hello``, with an error if the objective cannot be loaded.

All of it must be done within ``workers.startup_timeout`` seconds of the master starting to wait.
A rank on a node with a hung file system or GPU driver would otherwise keep the whole allocation
idle until its wall time: past the deadline the job ends with exit code 2 and one line that names
each late rank, its host, and the step it did not finish (:class:`StartupTimeoutError`). The
master only polls (no collective MPI call), so the deadline holds whatever a rank is stuck in.
With one process (master and worker together) the worker's set-up runs inside the master's
call, so a watchdog thread keeps the deadline instead.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass

from ..config import Config
from ..errors import EXIT_USAGE, ConfigError, StartupTimeoutError
from ..logs import print_error
from ..trials.devices import Binding, Place, assign, here, on_nodes
from .comm import Backoff, Comm
from .protocol import Hello, Join, Setup, mismatch

log = logging.getLogger(__name__)

#: Seconds between "still waiting" notes while ranks start.
NOTE_EVERY = 30.0
#: Late ranks named one by one in the error line; the rest are counted.
NAMED = 8


@dataclass
class Started:
    """The workers, ready: where every rank runs, each worker's binding, and their Hellos (in rank order)."""

    places: list[Place]
    bindings: dict[int, Binding]
    warnings: list[str]
    hellos: list[Hello]


def start_workers(comm: Comm, config: Config) -> Started:
    """Run start-up (see the module docstring). Raises :class:`ConfigError` for bad input (another install,
    an objective that cannot be loaded, a binding that cannot work) and :class:`StartupTimeoutError`."""
    timeout = config.workers.startup_timeout
    deadline = time.monotonic() + timeout if timeout else math.inf
    ranks = comm.worker_ranks
    joins: dict[int, Join] = {}
    hellos: dict[int, Hello] = {}
    waiter = _Waiter(comm, deadline, timeout, joins, hellos)
    waiter.until(lambda: len(joins) == len(ranks))
    if comm.in_process:
        places = [joins[0].unpack()]
    else:
        places = on_nodes([here(0)] + [joins[rank].unpack() for rank in ranks])
    w = config.workers
    bindings, warnings = assign(places, w.gpus_per_trial, w.workers_per_gpu, w.threads)
    with _watchdog(comm, waiter):
        waiter.set_up = True
        for rank in ranks:
            comm.post(Setup.of(config, bindings[rank]), rank)
        waiter.until(lambda: len(hellos) == len(ranks))
    errors = [hellos[rank].error for rank in ranks if hellos[rank].error]
    if errors:
        more = f" (and {len(errors) - 1} more rank{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise ConfigError(errors[0] + more)
    return Started(places, bindings, warnings, [hellos[rank] for rank in ranks])


class _Waiter:
    """Polls for Joins and Hellos until a condition holds or the deadline passes."""

    def __init__(self, comm: Comm, deadline: float, timeout: float, joins: dict[int, Join], hellos: dict[int, Hello]):
        self.comm, self.deadline, self.timeout = comm, deadline, timeout
        self.joins, self.hellos = joins, hellos
        self.set_up = False  # Setup sent: a rank that joined is late until its Hello

    def until(self, done) -> None:
        backoff = Backoff(spin=0.001, max_sleep=0.01)
        noted = time.monotonic()
        while not done():
            received = self.comm.poll()
            if received is not None:
                self._take(*received)
                backoff.reset()
                continue
            now = time.monotonic()
            if now >= self.deadline:
                raise StartupTimeoutError(self.late())
            if now - noted >= NOTE_EVERY:
                noted = now
                log.info("still waiting for %s", self.late(summary=True))
            backoff.wait()

    def _take(self, source: int, message) -> None:
        if isinstance(message, Join):
            problem = mismatch(message.version, message.protocol, source, message.host)
            if problem:
                raise ConfigError(problem)
            self.joins[source] = message
        elif isinstance(message, Hello):
            self.hellos[source] = message
        else:
            raise RuntimeError(f"expected Join or Hello from rank {source} during start-up, got {message!r}")

    def late(self, summary: bool = False) -> str:
        """``workers.startup_timeout: worker rank 2 (node07) did not finish importing the objective within 15 s``,
        naming every rank not ready yet and what it did not finish."""
        late = []
        for rank in self.comm.worker_ranks:
            if rank in self.hellos:
                continue
            if rank in self.joins:
                if not self.set_up:
                    continue  # it waits for the ranks that have not joined yet
                late.append(f"rank {rank} ({self.joins[rank].host}) did not finish importing the objective")
            else:
                late.append(f"rank {rank} (host unknown) did not start (no word from it)")
        if summary:
            return f"{len(late)} rank{'s' if len(late) > 1 else ''} to start: " + "; ".join(late[:NAMED])
        first = f"workers.startup_timeout: worker {late[0]} within {self.timeout:g} s"
        if len(late) == 1:
            return first
        others = "; ".join(late[1:NAMED])
        unnamed = f"; and {len(late) - NAMED} more" if len(late) > NAMED else ""
        return f"{first} (and {len(late) - 1} more: {others}{unnamed})"


class _watchdog:  # noqa: N801 - used as a context manager, read as a phrase
    """With one process, the worker's set-up runs inside ``comm.post``: a thread ends the process at the
    deadline with the same line as :class:`StartupTimeoutError` (a hung import cannot be interrupted)."""

    def __init__(self, comm: Comm, waiter: _Waiter):
        self.timer = None
        if comm.in_process and waiter.deadline != math.inf:
            self.timer = threading.Timer(max(0.0, waiter.deadline - time.monotonic()), self._expire, (waiter,))
            self.timer.daemon = True

    @staticmethod
    def _expire(waiter: _Waiter) -> None:
        print_error(waiter.late())
        os._exit(EXIT_USAGE)

    def __enter__(self) -> _watchdog:
        if self.timer is not None:
            self.timer.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.timer is not None:
            self.timer.cancel()
