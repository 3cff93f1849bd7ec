"""Every message between master and workers, and the MPI tag of each.

The conversation of one worker:

    master -> worker   Setup(config)            or Stop(exit_code) when the config is bad
    worker -> master   Hello(rank, host, ...)   error set if the objective cannot be loaded
    master -> worker   Task(...)                one in flight per worker
    worker -> master   Suggested(...)           only for a Bayesian Task: the point it chose, first
    worker -> master   Epoch(...)               any number: metrics the trial reported on its way
    worker -> master   Result(...)              the master answers with the next Task or Stop
    master -> worker   Stop(exit_code)

Messages are immutable NamedTuples, not frozen dataclasses: the master builds and reads
several per trial, and a NamedTuple costs 0.3 us to build where a frozen dataclass costs
2.2 us. A message travels as the plain tuple of its fields with its class's ``TAG`` as the
MPI tag, so pickling never has to look up a class (a fifth of the cost).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ._version import __version__

#: Raised when a message changes shape; master and workers must agree.
PROTOCOL_VERSION = 4


class Setup(NamedTuple):
    """The resolved experiment (a :class:`hpc_hpo.config.Config`) and this worker's
    :class:`hpc_hpo.devices.Binding` (its GPUs and threads), sent once to each worker."""

    TAG = 1
    config: Any
    binding: Any = None
    version: str = __version__
    protocol: int = PROTOCOL_VERSION


class Hello(NamedTuple):
    """A worker is ready (or, with ``error``, cannot load the objective)."""

    TAG = 2
    rank: int
    host: str
    pid: int
    version: str = __version__
    protocol: int = PROTOCOL_VERSION
    error: str = ""


class Task(NamedTuple):
    """Evaluate ``params`` as trial ``trial_id`` of ``phase`` (1-based).

    For a Bayesian trial ``params`` is None and ``suggest`` is (observations the worker has
    not seen, points pending elsewhere): the worker chooses the point, says so with
    :class:`Suggested`, then evaluates it.
    """

    TAG = 3
    trial_id: int
    params: dict | None
    phase: int
    strategy: str
    suggest: tuple | None = None


class Suggested(NamedTuple):
    """The point a worker chose for its Bayesian trial, sent before it evaluates it."""

    TAG = 6
    trial_id: int
    params: dict
    seconds: float


class Result(NamedTuple):
    """The outcome of a Task: ``value`` and ``metrics``, or ``error`` for a failed trial.

    ``status`` is "done", "failed" or "timeout"; ``memory_mb`` the resident memory of the
    process that ran the trial, when it ended.
    """

    TAG = 4
    trial_id: int
    value: Any
    metrics: dict
    error: str
    t_start: float
    t_end: float
    status: str = ""
    memory_mb: float = float("nan")


class Epoch(NamedTuple):
    """Metrics a running trial reported for one epoch (or step): stored in /epochs."""

    TAG = 7
    trial_id: int
    epoch: int
    metrics: dict
    time: float


class Stop(NamedTuple):
    """No more work: the worker leaves its loop and exits with ``exit_code``."""

    TAG = 5
    exit_code: int = 0


class Interrupted(NamedTuple):
    """A worker got a signal (SIGTERM, SIGUSR1, SIGINT): the job is ending; the master shuts down."""

    TAG = 8
    signal: int


class Bye(NamedTuple):
    """A worker stopped by a shutdown (``Stop(EXIT_RESUMABLE)``) is about to exit: the master may end."""

    TAG = 9
    rank: int


Message = Setup | Hello | Task | Suggested | Result | Epoch | Stop | Interrupted | Bye

_BY_TAG: dict[int, type] = {cls.TAG: cls for cls in (Setup, Hello, Task, Suggested, Result, Epoch, Stop, Interrupted,
                                                     Bye)}


def encode(message: Message) -> tuple[int, tuple]:
    """(tag, payload) for the wire."""
    return message.TAG, tuple(message)


def decode(tag: int, payload: tuple) -> Message:
    """The message a (tag, payload) pair stands for."""
    try:
        cls = _BY_TAG[tag]
    except KeyError:
        raise ValueError(f"unknown message tag {tag}") from None
    return cls(*payload)
