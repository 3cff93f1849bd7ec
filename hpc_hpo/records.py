"""A trial as the results file stores it: the record that travels from scheduler to HDF5 row."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RUNNING = "running"
DONE = "done"
FAILED = "failed"
#: Every status a trial row can have, in the order ``status`` lists them.
STATUSES = (DONE, FAILED, RUNNING)


@dataclass(frozen=True, slots=True)
class TrialRecord:
    """One trial: where it came from, where it ran, what it gave.

    ``value`` is what the objective returned (None unless ``status`` is done); times are
    UNIX seconds (NaN until known).
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
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""


def describe_params(params: dict[str, Any]) -> str:
    """``x=0.5 lr=0.001 act=relu``: parameters on one line, floats to 6 significant digits."""
    return " ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
