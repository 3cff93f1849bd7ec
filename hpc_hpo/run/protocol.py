"""Every message between master and workers, and the MPI tag of each.

The conversation of one worker:

    worker -> master   Join(version, ...)       first, as soon as the rank starts: where it runs
    master -> worker   Setup(version, ...)      the experiment, or Stop(exit_code) when it cannot run
    worker -> master   Hello(rank, host, ...)   error set if the objective cannot be loaded
    master -> worker   Task(...)                one in flight per worker
    worker -> master   Suggested(...)           only for a Bayesian Task: the point it chose, first
    worker -> master   Refresh(trial_id)        look-ahead: shortly before the trial is expected to end
    master -> worker   Update(...)              its answer: what the worker has not seen, what runs now
    worker -> master   Epoch(...)               any number: metrics the trial reported on its way
    master -> worker   Verdict(...)             after an Epoch that crossed one of the trial's rungs: go on or stop
    worker -> master   Result(...)              the master answers with the next Task or Stop
    master -> worker   Stop(exit_code)

``Join``, ``Setup`` and ``Stop`` keep their tags and the shape of their first fields in every
version (a later version may only add fields at the end, which an older rank ignores): the
versions are compared before anything else is decoded (the body of a Join or a
Setup is pickled separately and unpickled only once they match), so ranks of two different
installs get one clear line instead of a failed unpickling.

Messages are immutable NamedTuples, not frozen dataclasses: the master builds and reads
several per trial, and a NamedTuple costs 0.3 us to build where a frozen dataclass costs
2.2 us. A message travels as the plain tuple of its fields with its class's ``TAG`` as the
MPI tag, so pickling never has to look up a class (a fifth of the cost).
"""

from __future__ import annotations

import pickle
from typing import Any, NamedTuple

from .. import _version

#: Raised when a message changes shape; master and workers must agree.
PROTOCOL_VERSION = 9


def this_install() -> tuple[str, int]:
    """(hpc_hpo version, protocol version) of this process, as Join and Setup carry them."""
    return _version.__version__, PROTOCOL_VERSION


def mismatch(version: str, protocol: int, rank: int, host: str) -> str:
    """The error line when rank ``rank`` runs another install than this process, or "" when they match."""
    mine = this_install()
    if (version, protocol) == mine:
        return ""
    return (f"rank {rank} on {host} runs hpc_hpo {version} (protocol {protocol}) but the master runs {mine[0]} "
            f"(protocol {mine[1]}); install one version everywhere")


class Join(NamedTuple):
    """A worker has started: its install, rank and host, and where it runs (a pickled
    :class:`hpc_hpo.trials.devices.Place`, unpickled by the master only if the installs match)."""

    TAG = 10
    version: str
    protocol: int
    rank: int
    host: str
    place: bytes

    @classmethod
    def of(cls, place: Any) -> Join:
        version, protocol = this_install()
        return cls(version, protocol, place.rank, place.host, pickle.dumps(place))

    def unpack(self) -> Any:
        return pickle.loads(self.place)


class Setup(NamedTuple):
    """The resolved experiment (a :class:`hpc_hpo.config.Config`) and this worker's
    :class:`hpc_hpo.trials.devices.Binding` (its GPUs and threads), sent once to each worker, pickled
    inside ``body`` so that the worker checks the versions before it unpickles them."""

    TAG = 1
    version: str
    protocol: int
    body: bytes

    @classmethod
    def of(cls, config: Any, binding: Any = None) -> Setup:
        version, protocol = this_install()
        return cls(version, protocol, pickle.dumps((config, binding)))

    def unpack(self) -> tuple[Any, Any]:
        """(config, binding); only after the versions were found to match."""
        return pickle.loads(self.body)


class Hello(NamedTuple):
    """A worker is ready (or, with ``error``, cannot load the objective)."""

    TAG = 2
    rank: int
    host: str
    pid: int
    error: str = ""


class Task(NamedTuple):
    """Evaluate ``params`` as trial ``trial_id`` of ``phase`` (1-based).

    For a Bayesian trial ``params`` is None and ``suggest`` is (observations the worker has
    not seen, points pending elsewhere, its slot among the workers choosing now): the worker chooses the point, says so with
    :class:`Suggested`, then evaluates it. ``rungs`` (with ``[stopping]``): the numbers of epochs
    trained after which the trial is judged; a report that crosses one waits for the master's
    :class:`Verdict`. ``segment`` (a pbt phase): (member, parent, start_epoch, end_epoch): restore the checkpoint of
    trial ``parent`` (-1: none) and train those epochs; with ``suggest`` set as well (PB2), ``params`` are the values
    the member copied and the worker chooses new ones before it trains.
    """

    TAG = 3
    trial_id: int
    params: dict | None
    phase: int
    strategy: str
    suggest: tuple | None = None
    rungs: tuple = ()
    segment: tuple = ()


class Suggested(NamedTuple):
    """The point a worker chose for its Bayesian trial, sent before it evaluates it."""

    TAG = 6
    trial_id: int
    params: dict
    seconds: float


class Refresh(NamedTuple):
    """A Bayesian trial with ``lookahead`` is about to end (by its worker's estimate): the worker asks for what it
    has not seen yet, to prepare its next step while the trial still runs."""

    TAG = 12
    trial_id: int


class Update(NamedTuple):
    """The answer to :class:`Refresh`: (observations the worker has not seen, points running now, 0), as a
    Bayesian Task's ``suggest``; the worker's next Bayesian task carries only what came after it."""

    TAG = 13
    trial_id: int
    suggest: tuple


class Result(NamedTuple):
    """The outcome of a Task: ``value`` and ``metrics``, or ``error`` for a failed trial.

    ``status`` is "done", "failed" or "timeout"; ``memory_mb`` the resident memory of the
    process that ran the trial, when it ended. ``retire`` (why) says that the worker takes no
    more trials: its trial process failed to start several times in a row. ``epochs``: how many
    epochs the trial reported (its last epoch + 1). A pbt segment adds the size of the checkpoint it saved
    (``checkpoint_mb``) and whether it failed because the checkpoint it had to restore is unusable (``bad_checkpoint``).
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
    retire: str = ""
    epochs: int = 0
    checkpoint_mb: float = 0.0
    bad_checkpoint: bool = False


class Epoch(NamedTuple):
    """Metrics a running trial reported for one epoch (or step): stored in /epochs."""

    TAG = 7
    trial_id: int
    epoch: int
    metrics: dict
    time: float


class Verdict(NamedTuple):
    """The stopping rule judged trial ``trial_id`` after its report of ``epoch``: ``stop`` it, or let it go on."""

    TAG = 11
    trial_id: int
    epoch: int
    stop: bool


class Stop(NamedTuple):
    """No more work: the worker leaves its loop and exits with ``exit_code``; ``reason`` is the master's error
    line when the run failed (so that :func:`hpc_hpo.optimize` raises it on every rank)."""

    TAG = 5
    exit_code: int = 0
    reason: str = ""


class Interrupted(NamedTuple):
    """A worker got a signal (SIGTERM, SIGUSR1, SIGINT): the job is ending; the master shuts down."""

    TAG = 8
    signal: int


class Bye(NamedTuple):
    """A worker stopped by a shutdown (``Stop(EXIT_RESUMABLE)``) is about to exit: the master may end."""

    TAG = 9
    rank: int


Message = (Join | Setup | Hello | Task | Suggested | Refresh | Update | Result | Epoch | Verdict | Stop | Interrupted
           | Bye)

_BY_TAG: dict[int, type] = {cls.TAG: cls for cls in (Join, Setup, Hello, Task, Suggested, Refresh, Update, Result,
                                                     Epoch, Verdict, Stop, Interrupted, Bye)}


def encode(message: Message) -> tuple[int, tuple]:
    """(tag, payload) for the wire."""
    return message.TAG, tuple(message)


#: Messages a rank of another version may send or receive: later versions only add fields at their end, and
#: a rank reads the fields it knows (the versions are compared first; see the module docstring).
_FROZEN = (Join, Setup, Stop)


def decode(tag: int, payload: tuple) -> Message:
    """The message a (tag, payload) pair stands for."""
    try:
        cls = _BY_TAG[tag]
    except KeyError:
        raise ValueError(f"unknown message tag {tag}") from None
    if cls in _FROZEN:
        return cls(*payload[: len(cls._fields)])
    return cls(*payload)
