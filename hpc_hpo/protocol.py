"""Every message between master and workers, and the MPI tag of each.

The conversation of one worker:

    master -> worker   Setup(config)            or Stop(exit_code) when the config is bad
    worker -> master   Hello(rank, host, ...)   error set if the objective cannot be loaded
    master -> worker   Task(...)                one in flight per worker
    worker -> master   Result(...)              the master answers with the next Task or Stop
    master -> worker   Stop(exit_code)

Messages are frozen dataclasses in the code. On the wire they travel as a plain tuple of
their fields with the class's tag as the MPI tag: pickling a tuple costs a fifth of
pickling the dataclass, and the master handles every result.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ._version import __version__

#: Raised when a message changes shape; master and workers must agree.
PROTOCOL_VERSION = 1


@dataclass(frozen=True, slots=True)
class Setup:
    """The resolved experiment (a :class:`hpc_hpo.config.Config`), sent once to each worker."""

    TAG = 1
    config: Any
    version: str = __version__
    protocol: int = PROTOCOL_VERSION


@dataclass(frozen=True, slots=True)
class Hello:
    """A worker is ready (or, with ``error``, cannot load the objective)."""

    TAG = 2
    rank: int
    host: str
    pid: int
    version: str = __version__
    protocol: int = PROTOCOL_VERSION
    error: str = ""


@dataclass(frozen=True, slots=True)
class Task:
    """Evaluate ``params`` as trial ``trial_id`` of ``phase`` (1-based)."""

    TAG = 3
    trial_id: int
    params: dict
    phase: int
    strategy: str


@dataclass(frozen=True, slots=True)
class Result:
    """The outcome of a Task: ``value`` and ``metrics``, or ``error`` for a failed trial."""

    TAG = 4
    trial_id: int
    value: Any
    metrics: dict
    error: str
    t_start: float
    t_end: float


@dataclass(frozen=True, slots=True)
class Stop:
    """No more work: the worker leaves its loop and exits with ``exit_code``."""

    TAG = 5
    exit_code: int = 0


Message = Setup | Hello | Task | Result | Stop

_BY_TAG: dict[int, type] = {cls.TAG: cls for cls in (Setup, Hello, Task, Result, Stop)}
_FIELDS: dict[type, tuple[str, ...]] = {cls: tuple(f.name for f in fields(cls)) for cls in _BY_TAG.values()}


def encode(message: Message) -> tuple[int, tuple]:
    """(tag, payload) for the wire."""
    cls = type(message)
    return cls.TAG, tuple(getattr(message, name) for name in _FIELDS[cls])


def decode(tag: int, payload: tuple) -> Message:
    """The message a (tag, payload) pair stands for."""
    try:
        cls = _BY_TAG[tag]
    except KeyError:
        raise ValueError(f"unknown message tag {tag}") from None
    return cls(*payload)
