"""The master's logic as a pure state machine: ``handle(event, now) -> instructions``.

The scheduler decides which trial each free worker runs, keeps the budget of every phase,
records results, and stops the workers when the budget is spent or the objective looks
broken. It does no I/O and knows nothing of MPI or HDF5: the master driver turns messages
into events and carries out the instructions, so this logic is tested without MPI.
Events and instructions are NamedTuples, cheap enough to make several per trial.

Bayesian trials: the worker chooses the point. The scheduler keeps every finished trial in
``history`` (when some phase is Bayesian: a search without one keeps no history) and, per
worker, how much of it that worker has seen; a Bayesian task carries
only the unseen part (at most ``MAX_OBSERVATIONS``: the last ones and the best of the others)
and the points running elsewhere, so the master's work per result does not grow with the history.
The worker reports its point (``TrialStarted``) before it evaluates it. With ``sequential = true``
(the default) no two of ``WORKERS_PER_CHOOSER`` workers choose at once (with 64 workers or fewer,
no two at all), so each choice sees (nearly) every pending point and workers do not propose the
same point; ``"auto"`` lets more choose at once when steps are long against trials (``_choosers``),
each in its slot (``Suggest.slot``). A task carries at most
``MAX_PENDING`` pending points, those whose points were chosen last: with thousands of workers, every
running point in every task would make the master's work per result, and the worker's GP,
grow with the number of workers.

Repeats: each point of a phase with ``repeats = r`` is evaluated r times, on different
workers where possible. Repeat 0 is the trial that proposed it; its id is the ``group``.

A worker whose result says it *retires* (its trial process could not start, again and again)
is stopped and the search goes on with the others; when none is left and work remains, the
search fails.

Early stopping (``[stopping]``): the scheduler holds the stopping rule
(:mod:`hpc_hpo.search.stopping`); each reported epoch (``EpochReported``) that crosses one of the
trial's rungs gets a ``Judge`` instruction: go on or stop. A stopped trial returns what it has
and is recorded as ``pruned``: it counts towards the budget but never as a failure, and the best
trial is chosen among those that ran to the end. Bayesian workers learn from every trial through
its values at the rungs it reached (``history`` entries carry them as a third element).
Population Based Training (``strategy = "pbt"``): the phase's population (:mod:`hpc_hpo.search.pbt`) hands
out segments instead of points; each finished segment is told to it (``_on_segment``), it decides the member's
next segment, and the checkpoints nobody needs any more come back as a ``RemoveCheckpoints`` instruction (the
driver removes them after its next flush). The phase's budget follows the segments the population will run.
:meth:`Scheduler.shutdown` ends the search early (a signal, the time limit):
nothing more is handed out, results still arriving are recorded, running trials stay running.
"""

from __future__ import annotations

import copy
import heapq
import math
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import NamedTuple

import numpy as np

from ..config import Config, PhaseConfig
from ..errors import EXIT_FAILED, EXIT_OK, EXIT_RESUMABLE, CheckpointError
from ..results.records import DONE, FAILED, PRUNED, RUNNING, TrialRecord
from ..search.pbt import Finished, Population, Segment
from ..search.stopping import NoStopping, Report, StoppingRule, make_rule
from ..search.strategies import STRATEGIES, Strategy
from .observations import ObservationLog, Packed, pickled
from .protocol import Result

#: Near a deadline, the next trial is expected to take the longest of the recent ones times
#: (1 + DURATION_SLACK), plus DURATION_SLACK_SECONDS.
#: The most pending points a Bayesian task carries (those chosen last): the master's work per task and the size
#: of the worker's GP stay bounded at any number of workers.
MAX_PENDING = 256
#: The most observations a Bayesian task carries: with thousands of workers each task would carry one per other
#: worker (a megabyte at 16,384 workers). Past it, the last ones and, in up to half of it, the best of those left out
#: (of the KEEP_BEST best of the whole history): the worker's GP models at most 1,000 points, the best quarter of
#: them (250) and a spread of the rest, so it keeps the region that matters. The master joins and sends these bytes
#: for every task: 2,048 cost 0.1 ms a result more at 4,096 workers than 1,024.
MAX_OBSERVATIONS = 1024
KEEP_BEST = 256
#: In sequential mode one worker per this many chooses at a time: with up to this many workers no two choose at once;
#: with thousands, choosing one at a time would cap the search at one point per Bayesian step (~20 a second).
WORKERS_PER_CHOOSER = 64
#: ``sequential = "auto"``: enough workers may choose at once that choosing is busy at most this fraction of the time
#: (from the run's mean step and trial times): a worker then rarely waits for another's step.
CHOOSING_LOAD = 0.5
#: Workers choosing at once take the points of slots 0 .. SLOTS - 1 (the slot modulo this): past a few dozen, the
#: points further down the acquisition's ranking are no better than repeating the cycle.
SLOTS = 64
#: Weight of the newest value in the running means of step and trial times.
AVERAGE_WEIGHT = 0.1
DURATION_SLACK = 0.1
DURATION_SLACK_SECONDS = 1.0

# --- events: what happened ---------------------------------------------------------------


class WorkerReady(NamedTuple):
    """A worker has said Hello and waits for its first task."""

    rank: int
    host: str
    gpus: str = ""


class TrialStarted(NamedTuple):
    """A worker chose the point of its Bayesian trial and is evaluating it now."""

    rank: int
    trial_id: int
    params: dict
    suggest_seconds: float


class TrialFinished(NamedTuple):
    """A worker sent back the result of its trial."""

    rank: int
    result: Result


class RefreshAsked(NamedTuple):
    """A worker whose Bayesian trial is about to end asks for what it has not seen, to prepare its next step."""

    rank: int
    trial_id: int


class EpochReported(NamedTuple):
    """A running trial reported metrics after ``epoch`` (0-based)."""

    rank: int
    trial_id: int
    epoch: int
    metrics: dict


# --- instructions: what the driver must do -------------------------------------------------


def _average(mean: float | None, value: float) -> float:
    return value if mean is None else (1 - AVERAGE_WEIGHT) * mean + AVERAGE_WEIGHT * value


class Suggest(NamedTuple):
    """What a worker needs to choose a Bayesian point: unseen results and running points."""

    observations: Sequence  # [(params, value or None if failed)] the worker has not seen yet (Packed)
    pending: Sequence  # [params] evaluated elsewhere right now or queued as repeats (Packed)
    #: 0 for the only worker choosing now; k for the (k+1)-th of several choosing at once, which do not know each
    #: other's points: each takes the point after k better ones at least PENDING_RADIUS apart, as if theirs were pending.
    slot: int = 0


class Dispatch(NamedTuple):
    """Send this trial to its worker (``trial.rank``) and show it as running.

    ``trial.params`` is None when the worker chooses the point (``suggest`` says from what; for a PB2 segment
    ``base`` holds the values the member copied, which the worker explores from).
    """

    trial: TrialRecord
    suggest: Suggest | None = None
    base: dict | None = None


class SendUpdate(NamedTuple):
    """Answer a worker's refresh: what it needs to prepare its next Bayesian step (``suggest.slot`` is 0)."""

    rank: int
    trial_id: int
    suggest: Suggest


class Warn(NamedTuple):
    """Something the user must read in the log (a pbt member that starts afresh)."""

    text: str


class RemoveCheckpoints(NamedTuple):
    """Delete the checkpoints of these pbt segments: no segment will restore them."""

    trial_ids: list


class ShowRunning(NamedTuple):
    """The running trial changed (its worker chose its point): show it anew."""

    trial: TrialRecord


class Record(NamedTuple):
    """Store this finished trial."""

    trial: TrialRecord


class Judge(NamedTuple):
    """Tell the worker running ``trial_id`` whether it goes on after ``epoch`` (the stopping rule's verdict)."""

    rank: int
    trial_id: int
    epoch: int
    stop: bool


class StopWorker(NamedTuple):
    """Tell this worker to exit with ``exit_code``."""

    rank: int
    exit_code: int


class _Repeat(NamedTuple):
    group: int
    repeat: int
    params: dict
    phase: int
    strategy: str


@dataclass
class PhaseRun:
    """A phase during the run: its strategy and how many points it has proposed."""

    config: PhaseConfig
    strategy: Strategy
    issued: int = 0
    #: A pbt phase: its population, and the segments it counts on running (handed out + still to come).
    population: Population | None = None
    planned: int = 0
    #: Points the strategy proposed before a resume whose trials the file does not hold (handed out, then the job was
    #: killed before /running showed them): proposed again first (:meth:`Scheduler.restore`).
    lost: deque = field(default_factory=deque)

    @property
    def exhausted(self) -> bool:
        if self.population is not None:
            return self.population.finished
        return self.issued >= self.config.trials


def build_phases(config: Config) -> list[PhaseRun]:
    """One strategy per phase, each with its own random stream derived from the seed."""
    runs = []
    for phase in config.phases:
        rng = np.random.default_rng([config.experiment.seed, phase.index])
        strategy = STRATEGIES[phase.strategy](config.space, phase.options, rng)
        run = PhaseRun(phase, strategy, planned=phase.runs)
        if strategy.segments:
            run.population = strategy.start_population(config.experiment.minimize)
        runs.append(run)
    return runs


@dataclass
class Progress:
    """Counts the master shows and stores: how far the search is and the best so far."""

    budget: int
    issued: int = 0
    done: int = 0
    failed: int = 0
    pruned: int = 0
    best_value: float | None = None
    best_trial: int | None = None

    @property
    def finished(self) -> int:
        return self.done + self.failed + self.pruned


@dataclass
class Scheduler:
    """Pure master logic. Feed it events; carry out the instructions it returns."""

    phases: list[PhaseRun]
    minimize: bool = True
    max_initial_failures: int = 10
    #: No trial starts unless it is expected to end by then (UNIX seconds; None: no limit).
    deadline: float | None = None
    #: The early-stopping rule and the reported metric it judges.
    stopping: StoppingRule = field(default_factory=lambda: NoStopping(1, 1))
    stop_metric: str = ""
    progress: Progress = field(init=False)
    running: dict[int, TrialRecord] = field(default_factory=dict, init=False)
    hosts: dict[int, str] = field(default_factory=dict, init=False)
    gpus: dict[int, str] = field(default_factory=dict, init=False)
    stopped: set[int] = field(default_factory=set, init=False)
    #: Each worker's (host, GPUs) by rank, for its trials' records: a list, read at every hand-out (a lookup in the
    #: dictionaries above, among thousands of ranks, costs more cache misses).
    _placement: list = field(default_factory=list, init=False)
    #: Workers that retired (rank -> why); they are stopped too.
    retired: dict[int, str] = field(default_factory=dict, init=False)
    exit_code: int = field(default=EXIT_OK, init=False)
    error: str = field(default="", init=False)
    #: Every finished trial as (params, value or None), in order: what Bayesian workers learn from. With a
    #: stopping rule, (params, value or None, values at the rungs reached [+ the final value if it ran to the end]).
    #: Empty when no phase chooses its points on the workers (``_workers_learn``).
    history: list[tuple] = field(default_factory=list, init=False)
    _packed_history: ObservationLog = field(default_factory=lambda: ObservationLog(best=KEEP_BEST), init=False)
    _seen: dict[int, int] = field(default_factory=dict, init=False)
    #: The points of the running trials (trial id -> params pickled), in the order they became known.
    _pending_points: dict[int, bytes] = field(default_factory=dict, init=False)
    #: Running means of the Bayesian step and of the trial (seconds); None before the first.
    _step_seconds: float | None = field(default=None, init=False)
    _trial_seconds: float | None = field(default=None, init=False)
    #: The workers choosing a point now (rank -> its slot among them: 0, 1, ...; see Suggest.slot).
    _choosing: dict[int, int] = field(default_factory=dict, init=False)
    _free_slots: list[int] = field(default_factory=list, init=False)  # slots given back below len(_choosing), a heap
    _idle: deque = field(default_factory=deque, init=False)
    _repeats: deque = field(default_factory=deque, init=False)
    _reruns: deque = field(default_factory=deque, init=False)  # trials a resumed job runs again first
    _group_ranks: dict[int, set[int]] = field(default_factory=dict, init=False)
    _next_id: int = field(default=0, init=False)
    _stopping: bool = field(default=False, init=False)
    #: Durations of the last trials: how long the next one is expected to take.
    _durations: deque = field(default_factory=lambda: deque(maxlen=20), init=False)
    #: Set when the deadline left no time for the next trial.
    out_of_time: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.progress = Progress(budget=sum(p.config.runs for p in self.phases))
        #: Whether any phase has its points chosen on the workers: only then are the history and the running points
        #: kept for their tasks (a search of grids, lists, random or Sobol points keeps neither: less work per result,
        #: and no per-worker table of running points).
        self._workers_learn = any(p.strategy.suggests_on_worker for p in self.phases)

    @classmethod
    def from_config(cls, config: Config, deadline: float | None = None) -> Scheduler:
        e, s = config.experiment, config.stopping
        rule = make_rule(s.rule, s.min_epochs, max(s.max_epochs, s.min_epochs), s.reduction_factor, e.minimize,
                         s.brackets)
        return cls(build_phases(config), minimize=e.minimize, max_initial_failures=e.max_initial_failures,
                   deadline=deadline, stopping=rule, stop_metric=s.metric)

    @property
    def finished(self) -> bool:
        """Every worker that joined has been stopped (so no trial is still running)."""
        return len(self.stopped) == len(self.hosts) > 0

    def handle(self, event, now: float) -> list:
        if type(event) is TrialFinished:
            instructions = self._on_result(event.rank, event.result, now)
            if event.result.retire:
                self._retire(event.rank, event.result.retire, instructions)
            elif event.rank not in self.stopped:  # a result that arrives after a shutdown is only recorded
                self._idle.append(event.rank)  # behind the workers that have waited longer
        elif type(event) is EpochReported:
            return self._on_epoch(event)
        elif type(event) is TrialStarted:
            instructions = self._on_started(event)
        elif type(event) is RefreshAsked:
            return self._on_refresh(event)
        elif type(event) is WorkerReady:
            self.hosts[event.rank] = event.host
            self.gpus[event.rank] = event.gpus
            if event.rank >= len(self._placement):
                self._placement.extend([("", "")] * (event.rank + 1 - len(self._placement)))
            self._placement[event.rank] = (event.host, event.gpus)
            self._seen[event.rank] = 0
            instructions = []
            self._idle.append(event.rank)
        else:
            raise TypeError(f"unknown event {event!r}")
        if self._idle:
            self._wake_idle(now, instructions)
        return instructions

    def rungs_for(self, trial_id: int) -> tuple[int, ...]:
        """The numbers of epochs trained after which ``trial_id`` is judged (empty without a stopping rule)."""
        return self.stopping.rungs_for(trial_id)

    def restore(self, trials: list[TrialRecord], rerun: list[TrialRecord], next_id: int,
                reports: Iterable[tuple[int, int, float]] = ()) -> None:
        """Continue a search from its results file (before any worker is ready).

        ``trials`` (finished) count towards the budget and teach the strategies; the phase plan
        goes on after the points already proposed (a phase's own strategy replays its proposals,
        so its random stream continues where it was); ``rerun`` (running when the last job
        ended) are handed out first, each with the next attempt number; missing repeats of a
        point are queued again. ``reports`` (trial id, epoch, value of the stopping metric) of the finished
        trials rebuild the stopping rule's rungs.
        """
        self.stopping.replay(Report(*report) for report in reports)
        self._restore_populations(trials, rerun)
        points: dict[int, int] = {}
        present: dict[int, set[int]] = {}
        for record in (*trials, *rerun):
            if record.repeat == 0:
                points[record.phase] = points.get(record.phase, 0) + 1
            present.setdefault(record.group, set()).add(record.repeat)
            self._group_ranks.setdefault(record.group, set()).add(record.rank)
        recorded_ids = {r.trial_id for r in (*trials, *rerun)}
        unrecorded = sum(1 for trial_id in range(next_id) if trial_id not in recorded_ids)
        for phase in self.phases:
            phase.issued = points.get(phase.config.index, 0)
            if not phase.strategy.suggests_on_worker and phase.population is None:
                own = [r.params for r in (*trials, *rerun) if r.phase == phase.config.index and r.repeat == 0]
                self._replay(phase, own, unrecorded)
        self.progress.issued = len(trials) + len(rerun)
        for record in trials:
            if record.params is None:  # outside a space changed with --force: stored, but not learned from
                continue
            if record.segment:
                self._count(record)
                continue
            self._learn(record)
            self._count(record)
            if 1 <= record.phase <= len(self.phases):
                phase = self.phases[record.phase - 1]
                if not phase.strategy.suggests_on_worker:
                    phase.strategy.tell(record.params, record.value if record.status == DONE else None)
        for record in (*trials, *rerun):  # points whose repeats were not all handed out
            if record.repeat == 0 and record.params is not None and 1 <= record.phase <= len(self.phases):
                for repeat in range(1, self.phases[record.phase - 1].config.repeats):
                    if repeat not in present[record.group]:
                        self._repeats.append(_Repeat(record.group, repeat, record.params, record.phase,
                                                     record.strategy))
        self._reruns.extend(rerun)
        self._next_id = max(self._next_id, next_id)

    @staticmethod
    def _replay(phase: PhaseRun, recorded: list[dict | None], unrecorded: int) -> None:
        """Ask the phase's strategy again for what it proposed before the resume, so that it goes on after it.

        A trial handed out shortly before a kill may be in neither /trials nor /running (under load /running is
        written less often than /trials, :data:`~hpc_hpo.results.writer.RUNNING_TIME_SHARE`) while later ones are:
        its point then lies among the recorded ones in the strategy's order. The strategy is asked again (a copy of
        it) until every recorded point of the phase has come back; points that came back unrecorded on the way, at
        most as many as the trial ids below the next one that no row holds, are the lost ones, proposed again first.
        A replay that does not give back the recorded points (a space changed with --force) asks as many times as
        points were recorded, as before.
        """
        wanted: Counter = Counter()
        replay = copy.deepcopy(phase.strategy)
        lost: list[dict] = []
        try:
            wanted.update(phase.strategy.space.key(params) for params in recorded)  # KeyError, TypeError: no match
            while wanted and len(lost) <= unrecorded:
                params = replay.ask()
                if params is None:
                    break
                key = phase.strategy.space.key(params)
                copies = wanted.get(key, 0)
                if copies > 1:
                    wanted[key] = copies - 1
                elif copies:
                    del wanted[key]
                else:
                    lost.append(params)
        except (KeyError, TypeError):
            wanted[None] = 1
        if not wanted and len(lost) <= unrecorded:
            phase.strategy = replay
            phase.lost.extend(lost)
            return
        for _ in range(min(phase.issued, phase.config.trials)):
            if phase.strategy.ask() is None:
                break

    def _restore_populations(self, trials: list[TrialRecord], rerun: list[TrialRecord]) -> None:
        """Rebuild each pbt phase's population from its segments in the file (see :meth:`Population.restore`)."""
        for phase in self.phases:
            if phase.population is None:
                continue
            index = phase.config.index
            finished = [Finished(r.trial_id, r.member, r.parent, r.start_epoch, r.end_epoch, r.params,
                                 r.value if r.status == DONE else None,
                                 r.error.startswith(CheckpointError.__name__ + ":"))
                        for r in trials if r.phase == index and r.segment and r.params is not None]
            running = [(r.trial_id, Segment(r.member, r.params, r.parent, r.start_epoch, r.end_epoch))
                       for r in rerun if r.phase == index and r.segment]
            phase.population.restore(finished, running)
            phase.population.started = len(finished) + len(running)
            self._replan(phase)

    def _replan(self, phase: PhaseRun) -> None:
        """Keep the budget equal to the segments the population will have run, as members jump and fail."""
        planned = phase.population.started + phase.population.remaining()
        self.progress.budget += planned - phase.planned
        phase.planned = planned

    def stop(self, exit_code: int, error: str = "") -> None:
        """Hand out no more trials; running ones finish, then their workers stop."""
        if not self._stopping:
            self._stopping = True
            self.exit_code, self.error = exit_code, error
            self._repeats.clear()

    def shutdown(self, exit_code: int) -> list[int]:
        """End the search now: hand out nothing more, and count every worker as stopped (the driver tells
        them; their running trials stay running, to run again on resume). Returns the ranks to tell."""
        self.stop(exit_code)
        ranks = sorted(r for r in self.hosts if r not in self.stopped)
        self.stopped.update(ranks)
        self._idle.clear()
        return ranks

    # -- events ----------------------------------------------------------------------------

    def _on_started(self, event: TrialStarted) -> list:
        trial = self.running.get(event.rank)
        if trial is None or trial.trial_id != event.trial_id or trial.params is not None:
            raise RuntimeError(f"rank {event.rank} chose a point for trial {event.trial_id}, but it was running {trial!r}")
        trial = trial._replace(params=event.params, suggest_seconds=event.suggest_seconds)
        self.running[event.rank] = trial
        if self._workers_learn:
            self._pending_points[trial.trial_id] = pickled(trial.params)
        if event.suggest_seconds > 0:
            self._step_seconds = _average(self._step_seconds, event.suggest_seconds)
        self._release_slot(event.rank)
        if trial.segment:
            self.phases[trial.phase - 1].population.chosen(trial.member, event.params)
        else:
            self._queue_repeats(trial)
        return [ShowRunning(trial)]

    def _on_refresh(self, event: RefreshAsked) -> list:
        """What a worker with ``lookahead`` needs to prepare its next step while its Bayesian trial ends: the results it
        has not seen (from now on its next task carries only those that come later) and the points running now, its
        own among them. Nothing when the trial is not one the worker chose, or its phase has no points left to choose."""
        trial = self.running.get(event.rank)
        if (self._stopping or trial is None or trial.trial_id != event.trial_id or trial.segment
                or trial.strategy != "bayes"):
            return []
        phase = self.phases[trial.phase - 1]
        if phase.exhausted or not phase.config.options.get("lookahead", False):
            return []
        return [SendUpdate(event.rank, event.trial_id, self._suggest_for(event.rank, 0))]

    def _on_epoch(self, event: EpochReported) -> list:
        """Judge a reported epoch by the stopping rule; a verdict only where it crossed one of the trial's rungs."""
        trial = self.running.get(event.rank)
        value = event.metrics.get(self.stop_metric)
        if value is None or trial is None or trial.trial_id != event.trial_id:
            return []  # another metric, or a report of a trial this worker no longer runs
        decision = self.stopping.handle(Report(event.trial_id, event.epoch, value))
        if decision is None:
            return []
        return [Judge(event.rank, event.trial_id, event.epoch, decision.stop)]

    def _learn(self, record: TrialRecord) -> None:
        if not self._workers_learn:
            return
        observation = self._observation(record)
        self.history.append(observation)
        value = observation[1]
        self._packed_history.append(observation, None if value is None else (value if self.minimize else -value))

    def _observation(self, record: TrialRecord) -> tuple:
        """What Bayesian workers learn from a finished trial (see ``history``)."""
        value = record.value if record.status == DONE else None
        if isinstance(self.stopping, NoStopping):
            return (record.params, value)
        levels = self.stopping.levels(record.trial_id)
        if record.status == DONE:
            levels += (record.value,)
        return (record.params, value, levels)

    def _on_result(self, rank: int, result: Result, now: float) -> list:
        trial = self.running.pop(rank, None)
        if trial is None or trial.trial_id != result.trial_id or trial.params is None:
            raise RuntimeError(f"rank {rank} returned trial {result.trial_id}, but it was running {trial!r}")
        self._pending_points.pop(trial.trial_id, None)
        status = result.status or (FAILED if result.error else DONE)
        value = result.value if status in (DONE, PRUNED) else None
        record = trial._replace(status=status, t_start=result.t_start, t_end=result.t_end, value=value,
                                metrics=result.metrics, error=result.error, memory_mb=result.memory_mb,
                                epochs=result.epochs, checkpoint_mb=result.checkpoint_mb)
        if trial.segment:
            return self._on_segment(record, result, now)
        self._learn(record)
        if result.t_end > result.t_start:
            self._trial_seconds = _average(self._trial_seconds, result.t_end - result.t_start)
        if now >= trial.t_submit:  # on the master's clock, from hand-out to result: the step and the messages too
            self._durations.append(now - trial.t_submit)
        self._count(record)
        phase = self.phases[trial.phase - 1]
        if not phase.strategy.suggests_on_worker:
            phase.strategy.tell(trial.params, value if status == DONE else None)
        return [Record(record)]

    def _on_segment(self, record: TrialRecord, result: Result, now: float) -> list:
        """A pbt segment ended: the population decides its member's next segment; checkpoints nobody needs go."""
        if now >= record.t_submit:
            self._durations.append(now - record.t_submit)
        self._count(record)
        phase = self.phases[record.phase - 1]
        population = phase.population
        population.finish(Finished(record.trial_id, record.member, record.parent, record.start_epoch,
                                   record.end_epoch, record.params, record.value if record.status == DONE else None,
                                   result.bad_checkpoint))
        self._replan(phase)
        instructions: list = [Record(record)]
        while population.notes:
            instructions.append(Warn(f"phase {record.phase} (pbt): {population.notes.pop(0)}"))
        removable = population.removable()
        if removable:
            instructions.append(RemoveCheckpoints(removable))
        return instructions

    def _retire(self, rank: int, reason: str, instructions: list) -> None:
        """Stop a worker that can no longer run trials; fail the search if it was the last one and work remains."""
        self.retired[rank] = reason
        self.stopped.add(rank)
        if len(self.stopped) == len(self.hosts) and self._more_work_may_come():
            self.stop(EXIT_FAILED, f"no worker left to run trials: every worker retired (the last, rank {rank} on "
                                   f"{self.hosts.get(rank, '?')}: {reason})")
        instructions.append(StopWorker(rank, self.exit_code))

    def _count(self, record: TrialRecord) -> None:
        p = self.progress
        if record.status == PRUNED:  # stopped early on purpose: neither a failure nor a candidate for the best
            p.pruned += 1
            return
        if record.status != DONE:  # failed or timed out
            p.failed += 1
            if self.max_initial_failures and p.done == 0 and p.failed >= self.max_initial_failures:
                self.stop(EXIT_FAILED, f"the first {p.failed} trials all failed; the objective looks broken. "
                                       f"Last error: {record.error.splitlines()[0]}")
            return
        p.done += 1
        value = record.value
        if p.best_value is None or (value < p.best_value if self.minimize else value > p.best_value):
            p.best_value, p.best_trial = value, record.trial_id

    # -- handing out work --------------------------------------------------------------------

    @property
    def waiting_reruns(self) -> tuple[TrialRecord, ...]:
        """Trials of a resumed search still to run again, not yet handed out."""
        return tuple(self._reruns)

    def expected_duration(self) -> float:
        """How long the next trial is expected to take, hand-out to result: the longest of the last
        20, plus a tenth and a second for jitter (0 before any). Cutting a trial off loses all of it;
        this slack loses a little of the job's end."""
        if not self._durations:
            return 0.0
        return max(self._durations) * (1 + DURATION_SLACK) + DURATION_SLACK_SECONDS

    def _check_time(self, now: float) -> None:
        """Stop handing out trials once the next one would not end before the deadline."""
        if self.deadline is None or self._stopping or now + self.expected_duration() <= self.deadline:
            return
        if self._more_work_may_come():
            self.out_of_time = True
            self.stop(EXIT_RESUMABLE)

    def _assign(self, rank: int, now: float, instructions: list) -> None:
        """Give ``rank`` a trial, or let it wait for work that may still come, or stop it."""
        self._check_time(now)
        dispatch = self._work_for(rank, now)
        if dispatch is not None:
            instructions.append(dispatch)
        elif self._more_work_may_come():
            self._idle.append(rank)
        else:
            self.stopped.add(rank)
            instructions.append(StopWorker(rank, self.exit_code))

    def _wake_idle(self, now: float, instructions: list) -> None:
        """Offer work to the free workers, longest waiting first; those still without wait on.

        Once one waits on, so would the others (what there is to hand out does not depend on the worker,
        but for repeats, which go to other workers where possible): the rest are not asked, so a result
        costs the same with thousands of workers waiting for a Bayesian step as with none.
        """
        for _ in range(len(self._idle)):
            rank = self._idle.popleft()
            self._assign(rank, now, instructions)
            if self._idle and self._idle[-1] == rank and not self._repeats:
                self._idle.appendleft(self._idle.pop())  # it keeps its place at the head of the queue
                break

    def _more_work_may_come(self) -> bool:
        if self._stopping:
            return False
        if self._reruns or self._repeats or any(not phase.exhausted for phase in self.phases):
            return True
        # A point still being chosen may bring repeats with it (only a repeating phase's: thousands may be choosing).
        if not self._choosing or all(phase.config.repeats == 1 for phase in self.phases):
            return False
        return any(self.phases[self.running[r].phase - 1].config.repeats > 1 for r in self._choosing)

    def _work_for(self, rank: int, now: float) -> Dispatch | None:
        if self._stopping:
            return None
        if self._reruns:
            return self._dispatch_rerun(self._reruns.popleft(), rank, now)
        repeat = self._take_repeat(rank, other_workers_only=True)
        if repeat is not None:
            return self._dispatch_repeat(repeat, rank, now)
        for phase in self.phases:
            if phase.exhausted:
                continue
            if phase.population is not None:
                segment = phase.population.next_segment()
                if segment is None:
                    break  # the population waits (for a generation, or for the last members)
                return self._dispatch_segment(phase, segment, rank, now)
            if phase.strategy.suggests_on_worker:
                sequential = phase.config.options.get("sequential", True)
                if sequential and len(self._choosing) >= self._choosers(sequential):
                    break  # others are choosing: wait for a point, then choose knowing it
                return self._dispatch_suggest(phase, rank, now)
            params = phase.lost.popleft() if phase.lost else phase.strategy.ask()
            if params is None:  # the strategy ran dry before its budget: drop the rest of it
                self.progress.budget -= (phase.config.trials - phase.issued) * phase.config.repeats
                phase.issued = phase.config.trials
                continue
            trial = self._new_trial(phase, rank, params, now)
            self._queue_repeats(trial)
            return Dispatch(trial)
        repeat = self._take_repeat(rank, other_workers_only=False)
        return None if repeat is None else self._dispatch_repeat(repeat, rank, now)

    def _take_slot(self) -> int:
        """The lowest slot no worker choosing now holds (see ``Suggest.slot``)."""
        return heapq.heappop(self._free_slots) if self._free_slots else len(self._choosing)

    def _release_slot(self, rank: int) -> None:
        slot = self._choosing.pop(rank, None)
        if slot is not None:
            heapq.heappush(self._free_slots, slot)

    def _choosers(self, sequential: bool | str) -> int:
        """How many workers may choose a Bayesian point at once: one per WORKERS_PER_CHOOSER workers; with
        ``"auto"`` more when choosing one after another would make workers wait (see ``CHOOSING_LOAD``)."""
        workers = len(self.hosts)
        least = -(-workers // WORKERS_PER_CHOOSER)
        if sequential != "auto" or self._step_seconds is None or self._trial_seconds is None:
            return least
        needed = math.ceil(workers * self._step_seconds / (CHOOSING_LOAD * self._trial_seconds))
        return max(least, min(workers, needed))

    def _start(self, rank: int, now: float, **fields) -> TrialRecord:
        """A trial running on ``rank`` from ``now`` (its host and GPUs filled in), recorded as that worker's."""
        host, gpus = self._placement[rank] if rank < len(self._placement) else ("", "")
        trial = TrialRecord(status=RUNNING, rank=rank, host=host, t_submit=now, gpus=gpus, **fields)
        self.running[rank] = trial
        if trial.params is not None and self._workers_learn:
            self._pending_points[trial.trial_id] = pickled(trial.params)
        return trial

    def _new_trial(self, phase: PhaseRun, rank: int, params: dict | None, now: float) -> TrialRecord:
        phase.issued += 1
        self.progress.issued += 1
        trial_id, self._next_id = self._next_id, self._next_id + 1
        trial = self._start(rank, now, trial_id=trial_id, params=params, phase=phase.config.index,
                            strategy=phase.config.strategy, group=trial_id)
        if phase.config.repeats > 1:
            self._group_ranks[trial_id] = {rank}
        return trial

    def _dispatch_suggest(self, phase: PhaseRun, rank: int, now: float) -> Dispatch:
        slot = self._choosing[rank] = self._take_slot()
        suggest = self._suggest_for(rank, slot % SLOTS)
        return Dispatch(self._new_trial(phase, rank, None, now), suggest)

    def _suggest_for(self, rank: int, slot: int) -> Suggest:
        """The results ``rank`` has not seen (now seen) and the points pending now."""
        observations = self._packed_history.since(self._seen[rank], MAX_OBSERVATIONS)  # pickled once each: a join
        self._seen[rank] = len(self.history)
        pending = list(islice(reversed(self._pending_points.values()), MAX_PENDING))
        pending += [pickled(r.params) for r in islice(self._repeats, MAX_PENDING)]
        return Suggest(observations, Packed.of(pending), slot)

    def _dispatch_segment(self, phase: PhaseRun, segment: Segment, rank: int, now: float) -> Dispatch:
        phase.issued += 1
        self.progress.issued += 1
        trial_id, self._next_id = self._next_id, self._next_id + 1
        phase.population.start(segment, trial_id)
        choosing = segment.params is None  # PB2: the worker chooses the values (suggest_seconds -1 until then)
        trial = self._start(rank, now, trial_id=trial_id, params=segment.params, phase=phase.config.index,
                            strategy=phase.config.strategy, group=trial_id, member=segment.member,
                            parent=segment.parent, start_epoch=segment.start_epoch, end_epoch=segment.end_epoch,
                            suggest_seconds=-1.0 if choosing else float("nan"))
        if not choosing:
            return Dispatch(trial)
        base, history, running = segment.explore
        self._choosing[rank] = self._take_slot()
        return Dispatch(trial, Suggest(history, running), base)

    def _dispatch_rerun(self, previous: TrialRecord, rank: int, now: float) -> Dispatch:
        trial = self._start(rank, now, trial_id=previous.trial_id, params=previous.params, phase=previous.phase,
                            strategy=previous.strategy, repeat=previous.repeat, attempt=previous.attempt + 1,
                            group=previous.group, suggest_seconds=previous.suggest_seconds, member=previous.member,
                            parent=previous.parent, start_epoch=previous.start_epoch, end_epoch=previous.end_epoch)
        return Dispatch(trial)

    def _queue_repeats(self, trial: TrialRecord) -> None:
        for repeat in range(1, self.phases[trial.phase - 1].config.repeats):
            self._repeats.append(_Repeat(trial.group, repeat, trial.params, trial.phase, trial.strategy))

    def _take_repeat(self, rank: int, other_workers_only: bool) -> _Repeat | None:
        for i, repeat in enumerate(self._repeats):
            if not other_workers_only or rank not in self._group_ranks.get(repeat.group, ()):
                del self._repeats[i]
                return repeat
        return None

    def _dispatch_repeat(self, repeat: _Repeat, rank: int, now: float) -> Dispatch:
        self.progress.issued += 1
        trial_id, self._next_id = self._next_id, self._next_id + 1
        trial = self._start(rank, now, trial_id=trial_id, params=repeat.params, phase=repeat.phase,
                            strategy=repeat.strategy, repeat=repeat.repeat, group=repeat.group)
        if repeat.repeat == self.phases[repeat.phase - 1].config.repeats - 1:
            self._group_ranks.pop(repeat.group, None)  # the group's last repeat: nothing left to spread
        else:
            self._group_ranks.setdefault(repeat.group, set()).add(rank)
        return Dispatch(trial)

