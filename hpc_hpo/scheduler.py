"""The master's logic as a pure state machine: ``handle(event, now) -> instructions``.

The scheduler decides which trial each free worker runs, keeps the budget of every phase,
records results, and stops the workers when the budget is spent or the objective looks
broken. It does no I/O and knows nothing of MPI or HDF5: the master driver turns messages
into events and carries out the instructions, so this logic is tested without MPI.
Events and instructions are NamedTuples, cheap enough to make several per trial.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from .config import Config, PhaseConfig
from .errors import EXIT_FAILED, EXIT_OK
from .protocol import Result
from .records import DONE, FAILED, RUNNING, TrialRecord
from .strategies import STRATEGIES, Strategy

# --- events: what happened ---------------------------------------------------------------


class WorkerReady(NamedTuple):
    """A worker has said Hello and waits for its first task."""

    rank: int
    host: str


class TrialFinished(NamedTuple):
    """A worker sent back the result of its trial."""

    rank: int
    result: Result


Event = WorkerReady | TrialFinished

# --- instructions: what the driver must do -------------------------------------------------


class Dispatch(NamedTuple):
    """Send this trial to its worker (``trial.rank``) and show it as running."""

    trial: TrialRecord


class Record(NamedTuple):
    """Store this finished trial."""

    trial: TrialRecord


class StopWorker(NamedTuple):
    """Tell this worker to exit with ``exit_code``."""

    rank: int
    exit_code: int


Instruction = Dispatch | Record | StopWorker


@dataclass
class PhaseRun:
    """A phase during the run: its strategy and how many trials it has handed out."""

    config: PhaseConfig
    strategy: Strategy
    issued: int = 0

    @property
    def exhausted(self) -> bool:
        return self.issued >= self.config.trials


def build_phases(config: Config) -> list[PhaseRun]:
    """One strategy per phase, each with its own random stream derived from the seed."""
    runs = []
    for phase in config.phases:
        rng = np.random.default_rng([config.experiment.seed, phase.index])
        strategy = STRATEGIES[phase.strategy](config.space, phase.options, rng)
        runs.append(PhaseRun(phase, strategy))
    return runs


@dataclass
class Progress:
    """Counts the master shows and stores: how far the search is and the best so far."""

    budget: int
    issued: int = 0
    done: int = 0
    failed: int = 0
    best_value: float | None = None
    best_trial: int | None = None

    @property
    def finished(self) -> int:
        return self.done + self.failed


@dataclass
class Scheduler:
    """Pure master logic. Feed it events; carry out the instructions it returns."""

    phases: list[PhaseRun]
    minimize: bool = True
    max_initial_failures: int = 10
    progress: Progress = field(init=False)
    running: dict[int, TrialRecord] = field(default_factory=dict, init=False)
    hosts: dict[int, str] = field(default_factory=dict, init=False)
    stopped: set[int] = field(default_factory=set, init=False)
    exit_code: int = field(default=EXIT_OK, init=False)
    error: str = field(default="", init=False)
    _next_id: int = field(default=0, init=False)
    _stopping: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.progress = Progress(budget=sum(p.config.trials for p in self.phases))

    @classmethod
    def from_config(cls, config: Config) -> Scheduler:
        e = config.experiment
        return cls(build_phases(config), minimize=e.minimize, max_initial_failures=e.max_initial_failures)

    @property
    def finished(self) -> bool:
        """Every worker that joined has been stopped (so no trial is still running)."""
        return len(self.stopped) == len(self.hosts) > 0

    def handle(self, event: Event, now: float) -> list[Instruction]:
        if isinstance(event, TrialFinished):
            return self._on_result(event.rank, event.result, now)
        if isinstance(event, WorkerReady):
            self.hosts[event.rank] = event.host
            return [self._assign(event.rank, now)]
        raise TypeError(f"unknown event {event!r}")

    def stop(self, exit_code: int, error: str = "") -> None:
        """Hand out no more trials; running ones finish, then their workers stop."""
        if not self._stopping:
            self._stopping = True
            self.exit_code, self.error = exit_code, error

    def _on_result(self, rank: int, result: Result, now: float) -> list[Instruction]:
        trial = self.running.pop(rank, None)
        if trial is None or trial.trial_id != result.trial_id:
            raise RuntimeError(f"rank {rank} returned trial {result.trial_id}, but it was running {trial!r}")
        failed = bool(result.error)
        record = TrialRecord(
            trial_id=trial.trial_id, status=FAILED if failed else DONE, params=trial.params, phase=trial.phase,
            strategy=trial.strategy, rank=rank, host=trial.host, t_submit=trial.t_submit,
            t_start=result.t_start, t_end=result.t_end,
            value=None if failed else result.value, metrics=result.metrics, error=result.error,
        )
        self._count(record)
        self.phases[trial.phase - 1].strategy.tell(trial.params, record.value)
        return [Record(record), self._assign(rank, now)]

    def _count(self, record: TrialRecord) -> None:
        p = self.progress
        if record.status == FAILED:
            p.failed += 1
            if self.max_initial_failures and p.done == 0 and p.failed >= self.max_initial_failures:
                self.stop(EXIT_FAILED, f"the first {p.failed} trials all failed; the objective looks broken. "
                                       f"Last error: {record.error.splitlines()[0]}")
            return
        p.done += 1
        value = record.value
        if p.best_value is None or (value < p.best_value if self.minimize else value > p.best_value):
            p.best_value, p.best_trial = value, record.trial_id

    def _assign(self, rank: int, now: float) -> Instruction:
        if not self._stopping:
            trial = self._next_trial(rank, now)
            if trial is not None:
                self.running[rank] = trial
                return Dispatch(trial)
        self.stopped.add(rank)
        return StopWorker(rank, self.exit_code)

    def _next_trial(self, rank: int, now: float) -> TrialRecord | None:
        for phase in self.phases:
            if phase.exhausted:
                continue
            params = phase.strategy.ask()
            if params is None:  # the strategy ran dry before its budget: drop the rest of it
                self.progress.budget -= phase.config.trials - phase.issued
                phase.issued = phase.config.trials
                continue
            phase.issued += 1
            self.progress.issued += 1
            trial_id, self._next_id = self._next_id, self._next_id + 1
            return TrialRecord(
                trial_id=trial_id, status=RUNNING, params=params, phase=phase.config.index,
                strategy=phase.config.strategy, rank=rank, host=self.hosts.get(rank, ""), t_submit=now,
            )
        return None
