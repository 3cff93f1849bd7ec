"""A trial as the results file stores it: the record that travels from scheduler to HDF5 row."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, NamedTuple

RUNNING = "running"
DONE = "done"
FAILED = "failed"
#: Killed after ``workers.trial_timeout`` seconds: a failed trial that ran out of time.
TIMEOUT = "timeout"
#: Stopped early by the stopping rule (``[stopping]``): its value is what it returned when it stopped.
PRUNED = "pruned"
#: Every status a trial row can have, in the order ``status`` lists them.
STATUSES = (DONE, PRUNED, FAILED, TIMEOUT, RUNNING)


#: The metrics of a trial that has none (shared, so it must not be changed).
NO_METRICS: Any = MappingProxyType({})


class TrialRecord(NamedTuple):
    """One trial: where it came from, where it ran, what it gave.

    ``value`` is what the objective returned (None unless ``status`` is done or pruned); times are
    UNIX seconds (NaN until known). ``params`` is None while a worker is still choosing the
    point of a Bayesian trial. ``repeat`` counts evaluations of the same point (0 for the
    first); ``attempt`` counts runs of this very trial (2 when a resumed job re-ran a trial
    that was running when the previous job died); ``group`` is the trial id of that first evaluation. ``suggest_seconds`` is the
    time a worker spent choosing the point (NaN when the master chose it). ``gpus`` names the
    GPUs the trial ran on (``"cpu"`` for none); ``memory_mb`` is the resident memory of the
    process that ran it, measured when it ended (NaN if unknown). ``epochs`` is how many epochs it
    trained, as it reported them (the last reported epoch + 1; 0 if it reported none). A segment of a pbt
    phase has its ``member``, the trial whose checkpoint it restored (``parent``, -1 for none), the epochs it
    trained (``start_epoch`` .. ``end_epoch`` - 1) and the size of the checkpoint it saved (``checkpoint_mb``); other
    trials have ``member = -1``. An immutable
    NamedTuple, like the protocol messages: the master builds two per trial.
    """

    trial_id: int
    status: str
    params: dict[str, Any]
    phase: int
    strategy: str
    rank: int
    host: str
    t_submit: float
    t_start: float = float("nan")
    t_end: float = float("nan")
    value: float | None = None
    metrics: dict[str, float] = NO_METRICS
    error: str = ""
    repeat: int = 0
    attempt: int = 1
    group: int = -1
    suggest_seconds: float = float("nan")
    gpus: str = ""
    memory_mb: float = float("nan")
    epochs: int = 0
    member: int = -1
    parent: int = -1
    start_epoch: int = 0
    end_epoch: int = 0
    checkpoint_mb: float = 0.0

    @property
    def segment(self) -> bool:
        """A segment of a pbt phase (a member's training from ``start_epoch`` to ``end_epoch``)."""
        return self.member >= 0


def describe_params(params: dict[str, Any]) -> str:
    """``x=0.5 lr=0.001 act=relu``: parameters on one line, floats to 6 significant digits."""
    return " ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def format_duration(seconds: float) -> str:
    """``42s``, ``12.5 min``, ``3.1 h``: a duration as people read it."""
    if seconds < 120:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
