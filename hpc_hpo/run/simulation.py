"""A cluster simulated in one process: the real master loop, N simulated workers behind a :class:`Comm`.

For measuring the master where no allocation is at hand (``benchmarks/scale.py``): the master
is the real one (scheduler, HDF5 writer, progress), and every message it sends or receives is
pickled and unpickled as over MPI, so its costs are the ones it has in a job. The workers are
events in a queue (:class:`EventQueue`): a Task comes back as a Result after a trial duration drawn by
``duration``; a Bayesian Task first comes back as a Suggested, after ``step(observations, pending)`` seconds,
with a random point of the space (the master never fits a GP; only the step's time matters to it).

With ``fold`` the workers look ahead as under MPI with trials in child processes (a bayes phase's
``lookahead``): a worker that knows how long a trial takes (its last one) sends a Refresh that long,
less its last step and the worker's margin, after its Bayesian trial starts; the master's Update
starts a prepared step (``step`` seconds, beside the trial); the next Bayesian task then waits for
that step if it is still running, and folds in the results that came since in
``fold(observations, pending, new results)`` seconds. Without a last trial the step is prepared when
the trial starts, from what the task brought; when the trial ends before its moment the next step is
whole, except from ``KEEP_POSTERIOR_FROM`` observations, where a step is prepared at the start too.

Two clocks:

* ``"virtual"``: simulated time. The master's own work advances it by the time the master
  really spent working (the workers' simulation is not counted), so a master that cannot keep up shows
  as workers waiting. When every worker is busy the master jumps ahead to the next event. A
  run of thousands of workers with 60-s trials takes the master's CPU time, not an hour.
* ``"real"``: events fall due on the wall clock, and the master sleeps between them as in a
  job: for comparing with a real ``mpirun`` run of the same shape.

:attr:`SimulatedCluster.stats` says, per trial, how long its worker waited between sending a
result and starting the next trial (the message, the master, another worker's choice, its own
Bayesian step), and on the virtual clock the master's working time.
"""

from __future__ import annotations

import bisect
import heapq
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import EXIT_RESUMABLE
from ..search.gp.suggester import KEEP_POSTERIOR_FROM
from ..search.space import Space
from .comm import Comm
from .protocol import Bye, Refresh, Result, Stop, Suggested, Task, Update, decode, encode
from .worker import REFRESH_MARGIN


@dataclass
class SimulationStats:
    """What a simulated run measured (seconds of the simulation's clock unless named CPU)."""

    trials: int = 0
    busy: float = 0.0  # in the objective, summed over trials
    gaps: list = field(default_factory=list)  # per trial: its worker's time from its last result to this trial's start
    steps: float = 0.0  # Bayesian steps, summed (with a look-ahead: the fold-ins and the waits for a prepared step)
    prepared: int = 0  # steps prepared from an Update (look-ahead with a refresh)
    master_cpu: float = 0.0  # the master's time working, between its first and last message (virtual clock only)
    simulated: float = 0.0  # time the simulated workers took in the master's process (to take out of its CPU time)
    task_bytes: int = 0
    tasks: int = 0
    pending: int = 0  # pending points the Bayesian tasks carried, summed
    observations: int = 0  # observations the Bayesian tasks carried, summed
    bayes_tasks: int = 0
    started: float | None = None  # the first task, on the simulation's clock
    ended: float = 0.0  # the last result
    cpu_at_result: list = field(default_factory=list)  # master_cpu when the master took each result (virtual clock)

    @property
    def utilisation(self) -> float:
        """Time in trials over time in trials plus the gaps before them."""
        total = self.busy + sum(self.gaps)
        return self.busy / total if total else float("nan")

    def steady_cpu_per_result(self, workers: int) -> float:
        """The master's CPU per result in the steady state: from its ``workers``-th result to its ``workers``-th
        from the end, where each result is answered by one new task (before it the master hands every worker its
        first task; after it, stops them: costs per worker, not per result). NaN with too few results."""
        marks = self.cpu_at_result
        last = len(marks) - 1 - workers
        if last <= workers:
            return float("nan")
        return (marks[last] - marks[workers]) / (last - workers)


class SimulatedCluster(Comm):
    """``workers`` simulated workers (ranks 1..N) for a master in this process.

    ``objective(params)`` gives a trial's value, ``duration(rng)`` its length in seconds,
    ``step(observations, pending)`` the seconds a Bayesian step takes with that many observations
    in the worker's history and that many points pending; ``fold(observations, pending, new)`` those
    of folding ``new`` results into a prepared step (None: no look-ahead).
    """

    def __init__(self, workers: int, space: Space, objective: Callable[[dict], float],
                 duration: Callable[[np.random.Generator], float],
                 step: Callable[[int, int], float] = lambda observations, pending: 0.0,
                 clock: str = "virtual", seed: int = 0, fold: Callable[[int, int, int], float] | None = None):
        if clock not in ("virtual", "real"):
            raise ValueError(f"clock: 'virtual' or 'real' (got {clock!r})")
        self.rank, self.size = 0, workers + 1
        self.space, self.objective, self.duration, self.step, self.fold = space, objective, duration, step, fold
        self.virtual = clock == "virtual"
        self.rng = np.random.default_rng(seed)
        self.stats = SimulationStats()
        # (due, seq, source, message), a Result as the tuple (trial_id, value, start, end) of numbers only, which
        # Python's garbage collector does not track (16,384 Result objects in flight would be traversed at every
        # full collection, as the master's cost); made into a message and pickled when it falls due.
        self._events = EventQueue(_bucket_width(duration, workers, seed))
        self._origin = time.monotonic()
        self._now = 0.0  # the simulation's clock (virtual mode): the master's time
        self._cpu_mark: float | None = None  # process CPU time when the master last got control back
        self._sim_cpu = 0.0
        self._history = [0] * (workers + 1)  # observations each worker has seen
        self._free_since = [0.0] * (workers + 1)  # when each worker sent its last result
        # The look-ahead, per worker: its last trial's length, its last whole or prepared step, when its prepared
        # step is done (None: none prepared), and the trial it runs.
        self._last_trial: list[float | None] = [None] * (workers + 1)
        self._last_step = [0.0] * (workers + 1)
        self._ready: list[float | None] = [None] * (workers + 1)
        self._trial = [-1] * (workers + 1)

    # -- the clock ------------------------------------------------------------------------

    def now(self) -> float:
        """The simulation's time: virtual, or seconds since the cluster was made."""
        return self._now if self.virtual else time.monotonic() - self._origin

    def _master_ran(self) -> None:
        """Advance the virtual clock by the time the master worked since it last got control.

        The master never sleeps on the virtual clock, so its time is its CPU time (when nothing else runs on
        the core); it is read with ``perf_counter``, as ``process_time`` costs ~20 us a call on some
        machines, which would count as the master's. On the wall clock the master sleeps as in a job, and
        its CPU time is the /runs row's."""
        now = time.perf_counter()
        if self._cpu_mark is not None and self.virtual:
            spent = max(0.0, now - self._cpu_mark - self._sim_cpu)
            self.stats.master_cpu += spent
            self._now += spent
        self._sim_cpu = 0.0
        self._cpu_mark = now

    # -- the master's side ----------------------------------------------------------------

    def send(self, message, dest: int) -> None:
        tag, payload = encode(message)
        data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)  # what mpi4py does on send
        self._master_ran()
        started = time.perf_counter()
        self._worker_receives(dest, decode(tag, pickle.loads(data)), len(data))
        elapsed = time.perf_counter() - started
        self._sim_cpu += elapsed
        self.stats.simulated += elapsed

    def poll(self):
        self._master_ran()
        if not self._events:
            return None
        due = self._events.next_due()
        if due > self.now():
            if not self.virtual:
                return None
            self._now = due  # every worker is busy: the master waits for the next event
        started = time.perf_counter()
        _, _, source, message = self._events.pop()  # the simulation's queue (MPI's is not the master's work)
        if type(message) is tuple:
            trial_id, value, start, end = message
            message = Result(trial_id, value, {}, "", start, end, "done")
        # The worker pickles its message now, as it sends it at the end of its trial: the master then reads bytes
        # just written, as from an MPI receive buffer, not bytes made when the trial started (with thousands of
        # trials in flight those would have left the caches long ago, a cost no real master has).
        tag, payload = encode(message)
        data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        elapsed = time.perf_counter() - started
        self._sim_cpu += elapsed
        self.stats.simulated += elapsed
        message = decode(tag, pickle.loads(data))  # the master's cost, as after an MPI receive
        self.stats.ended = max(self.stats.ended, self.now())
        if tag == Result.TAG:
            self.stats.cpu_at_result.append(self.stats.master_cpu)
        return source, message

    # -- the workers ----------------------------------------------------------------------

    def _emit(self, due: float, source: int, message) -> None:
        self._events.push(due, source, message)

    def _emit_result(self, due: float, source: int, trial_id: int, value: float, start: float, end: float) -> None:
        self._events.push(due, source, (trial_id, value, start, end))

    def _worker_receives(self, rank: int, message, size: int) -> None:
        now = self.now()
        kind = type(message)
        if kind is Stop:
            if message.exit_code == EXIT_RESUMABLE:
                self._emit(now, rank, Bye(rank))
            return
        if kind is Update:
            if message.trial_id == self._trial[rank]:
                observations, pending, _slot = message.suggest
                self._history[rank] += len(observations)
                self._prepare(rank, now, len(pending))
                self.stats.prepared += 1
            return
        if kind is not Task:
            return  # a Verdict: the simulated trials report no epochs
        stats = self.stats
        if stats.started is None:
            stats.started = now
        stats.tasks += 1
        stats.task_bytes += size
        start = now
        params = message.params
        if message.suggest is not None:
            observations, pending, _slot = message.suggest
            self._history[rank] += len(observations)
            ready, self._ready[rank] = self._ready[rank], None
            if ready is not None:  # a prepared step: wait for it if it still runs, then fold in what came since
                seconds = max(0.0, ready - now) + self.fold(self._history[rank], len(pending), len(observations))
            else:
                seconds = self._last_step[rank] = self.step(self._history[rank], len(pending))
            stats.bayes_tasks += 1
            stats.observations += len(observations)
            stats.pending += len(pending)
            stats.steps += seconds
            start = now + seconds
            params = self.space.sample(self.rng, 1)[0]
            self._emit(start, rank, Suggested(message.trial_id, params, seconds))
        seconds = float(self.duration(self.rng))
        end = start + seconds
        self._trial[rank] = message.trial_id
        if self.fold is not None and message.suggest is not None:
            self._look_ahead(rank, message, start, end)
        self._last_trial[rank] = seconds
        stats.trials += 1
        stats.busy += seconds
        stats.gaps.append(start - self._free_since[rank] if self._free_since[rank] else start - stats.started)
        self._free_since[rank] = end
        origin = time.time() - now  # rows get wall-clock-like times on the simulation's clock
        self._emit_result(end, rank, message.trial_id, float(self.objective(params)), origin + start, origin + end)

    def _look_ahead(self, rank: int, task: Task, start: float, end: float) -> None:
        """As the worker's ``_look_ahead``: a Refresh at the moment its last trial's length says, or a step prepared
        now from what the task brought."""
        last = self._last_trial[rank]
        if last is not None:
            when = start + max(0.0, last - (self._last_step[rank] + REFRESH_MARGIN))
            if when < end:
                self._emit(when, rank, Refresh(task.trial_id))
            if self._history[rank] < KEEP_POSTERIOR_FROM:
                return  # (a trial that ends before its moment: the next step is whole)
        self._prepare(rank, start, len(task.suggest[1]) + 1)

    def _prepare(self, rank: int, now: float, pending: int) -> None:
        seconds = self._last_step[rank] = self.step(self._history[rank], pending)
        self._ready[rank] = now + seconds


#: Events a bucket of the simulation's queue holds on average (see :class:`EventQueue`).
EVENTS_PER_BUCKET = 32


class EventQueue:
    """The simulated workers' messages in the order they fall due: ``(due, seq, source, message)``, ties in the order
    they were pushed; what a heap of all of them would give, in the same order.

    A calendar queue: events go unsorted into buckets of ``width`` seconds, and a bucket is sorted when the clock
    reaches it. A heap of 16,384 events in flight compares 14 of them, made long ago and no longer in the caches,
    at every push and pop: in the master's process that traffic evicted the master's own state (a real master's
    workers live elsewhere). Here an event is touched when pushed, once when its bucket is sorted, and when popped.
    """

    def __init__(self, width: float):
        self.width = width if width > 0 else 1.0
        self._buckets: dict[int, list] = {}
        self._ticks: list[int] = []  # a heap of the buckets' numbers
        self._now: list = []  # the bucket being taken, sorted from the last event to the next
        self._tick = -1  # its number
        self._seq = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def push(self, due: float, source: int, message) -> None:
        event = (due, self._seq, source, message)
        self._seq += 1
        self._size += 1
        tick = int(due // self.width)
        if tick <= self._tick:  # in the bucket being taken (never earlier: nothing falls due before the clock)
            bisect.insort(self._now, event, key=_later)
            return
        bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = self._buckets[tick] = []
            heapq.heappush(self._ticks, tick)
        bucket.append(event)

    def _fill(self) -> None:
        while not self._now:
            self._tick = heapq.heappop(self._ticks)
            self._now = sorted(self._buckets.pop(self._tick), reverse=True)

    def next_due(self) -> float:
        self._fill()
        return self._now[-1][0]

    def pop(self) -> tuple:
        self._fill()
        self._size -= 1
        return self._now.pop()


def _later(event: tuple) -> tuple:
    """A key that sorts events from the last to fall due to the next (the bucket being taken is popped from its end)."""
    return (-event[0], -event[1])


def _bucket_width(duration: Callable[[np.random.Generator], float], workers: int, seed: int) -> float:
    """Seconds of a bucket such that the events of ``workers`` busy workers fill one with about EVENTS_PER_BUCKET:
    from the median of trial durations drawn with a generator of its own (the simulation's draws stay as they were)."""
    rng = np.random.default_rng([seed, 1])
    typical = float(np.median([duration(rng) for _ in range(64)]))
    return max(typical, 1e-6) * EVENTS_PER_BUCKET / max(1, workers)
