"""The worker driver: turns the master's messages into trials and results.

:class:`Worker` holds the logic (Setup -> Hello, Task -> Result) and serves both the MPI
loop in :func:`run_worker` and the one-process run, where the master calls
``Worker.handle`` directly through :class:`hpc_hpo.comm.LocalComm`.
"""

from __future__ import annotations

import logging
import os
import socket
import time

from ._version import __version__
from .comm import MASTER, Backoff, Comm
from .errors import ObjectiveImportError
from .executor import InlineExecutor
from .objective import TrialContext
from .protocol import PROTOCOL_VERSION, Hello, Message, Result, Setup, Stop, Task

log = logging.getLogger(__name__)


class Worker:
    """One worker's state: the experiment it serves and the executor that runs its trials."""

    def __init__(self, rank: int, host: str | None = None):
        self.rank = rank
        self.host = host or socket.gethostname()
        self.config = None
        self.executor: InlineExecutor | None = None

    def handle(self, message: Message) -> Message | None:
        """The reply to a message from the master (None for Stop)."""
        if isinstance(message, Task):
            return self.run_task(message)
        if isinstance(message, Setup):
            return self.setup(message)
        if isinstance(message, Stop):
            self.close()
            return None
        raise TypeError(f"rank {self.rank}: unexpected message {message!r}")

    def setup(self, setup: Setup) -> Hello:
        """Load the objective; report any failure in the Hello instead of crashing."""
        error = ""
        if setup.protocol != PROTOCOL_VERSION or setup.version != __version__:
            error = (f"rank {self.rank} on {self.host} runs hpc_hpo {__version__} (protocol {PROTOCOL_VERSION}) but "
                     f"the master runs {setup.version} (protocol {setup.protocol}); install one version everywhere")
        else:
            self.config = setup.config
            experiment = self.config.experiment
            try:
                self.executor = InlineExecutor(experiment.objective, self.config.base_dir)
            except ObjectiveImportError as exc:
                error = f"{exc} on rank {self.rank} ({self.host})"
        return Hello(self.rank, self.host, os.getpid(), error=error)

    def run_task(self, task: Task) -> Result:
        experiment = self.config.experiment
        context = TrialContext(
            trial_id=task.trial_id, params=task.params, rank=self.rank, host=self.host, phase=task.phase,
            strategy=task.strategy, experiment=experiment.name, experiment_seed=experiment.seed,
            workdir_root=experiment.workdir,
        )
        t_start = time.time()
        outcome = self.executor.run(dict(task.params), context)
        t_end = time.time()
        log.debug("trial %d %s in %.3fs", task.trial_id, "failed" if outcome.error else "done", t_end - t_start)
        return Result(task.trial_id, outcome.value, outcome.metrics, outcome.error, t_start, t_end)

    def close(self) -> None:
        if self.executor is not None:
            self.executor.close()
            self.executor = None


def run_worker(comm: Comm) -> int:
    """Serve the master until it says Stop; return the exit code it gives."""
    worker = Worker(comm.rank)
    backoff = Backoff(spin=0.001, max_sleep=0.01)
    while True:
        _, message = comm.wait(backoff)
        backoff.reset()
        if isinstance(message, Stop):
            worker.close()
            return message.exit_code
        comm.send(worker.handle(message), MASTER)
