"""Population Based Training as a pure state machine: which member trains next, who copies whom, what it explores.

A population of ``population`` members trains in *segments* of ``interval`` epochs; each segment is one trial
(one row of the results file). A segment restores the checkpoint of its ``parent`` (a finished segment, by trial
id; none for a member's first) and trains epochs ``start_epoch .. end_epoch - 1``. When a member's segment ends
(``mode = "async"``, the default), the member is ranked among the population:

- it is compared with the members at most one interval behind it, each at this member's epoch: a member that
  got there as it was then (its score at its latest segment end <= that epoch), one just behind projected there
  along the line through its last two scores (as it is, with one score), so that the first member to reach an
  epoch is ranked fairly, not against less trained members; members further behind are left out (a lagging
  member would hold the bottom for as long as it lags); with fewer than 2 members to compare it goes on;
- with n members ranked, the best ``k = min(ceil(n * quantile), n // 2)`` are the top, the worst k the bottom;
  a bottom member whose score ties with a top member's is not exploited (copying an equal gains nothing);
- a bottom member *exploits*: it continues from the latest checkpoint of a top member chosen at random among those
  not finished (and so from that member's epoch: a member may jump ahead, or back by at most one interval, to a
  better state), and *explores* from that member's values: each
  parameter is resampled from the space with ``resample_probability``, or else multiplied by one of ``perturb``
  (:func:`perturb_value`); with ``explore = "pb2"`` the worker that runs the segment chooses the values with a
  GP bandit instead (:mod:`hpc_hpo.search.gp.pb2`), from :attr:`Segment.explore`;
- any other member goes on from its own checkpoint with its own values.

With ``mode = "sync"`` the population waits: no member starts its next segment before every member finished
the current one, and all are ranked at the same epoch.

A failed segment is run again from the same checkpoint, unless the failure says the checkpoint it restored is
unusable (``bad_checkpoint``): that checkpoint is never used again and the member goes back to its own last good
one (with the values it had there); a member with none left starts afresh, which :attr:`Population.notes` says.
After ``MAX_FAILURES`` failed segments in a row a member is given up. Checkpoints to keep (:meth:`keep`): the
last two of each member, the best one, and every one a running or decided segment restores.

Nothing here waits, reads files or knows MPI: the scheduler feeds it results and hands out its segments.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from .space import CategoricalParam, FloatParam, IntParam, Space

MODES = ("async", "sync")
EXPLORERS = ("perturb", "pb2")
#: A member whose segments fail this many times in a row is given up.
MAX_FAILURES = 3
#: Checkpoints kept per member besides the best and those still to be restored.
KEEP_PER_MEMBER = 2
#: PB2 learns from the latest this many finished segments (what a PB2 task carries to its worker).
PB2_WINDOW = 200


@dataclass(frozen=True)
class PbtSettings:
    """The options of a ``strategy = "pbt"`` phase (see :mod:`hpc_hpo.search.strategies.pbt`)."""

    population: int
    interval: int
    epochs: int
    quantile: float = 0.25
    resample_probability: float = 0.25
    perturb: tuple[float, ...] = (0.8, 1.2)
    mode: str = "async"
    explore: str = "perturb"

    @property
    def segments_per_member(self) -> int:
        return math.ceil(self.epochs / self.interval)


class Segment(NamedTuple):
    """One segment to run: ``member`` trains epochs ``start_epoch .. end_epoch - 1`` with ``params``, from the
    checkpoint of trial ``parent`` (-1: from scratch). ``params`` is None when the worker chooses them (PB2), from
    ``explore`` = (the donor's values, [(epoch, values, score change)] of finished segments, [values] running)."""

    member: int
    params: dict | None
    parent: int
    start_epoch: int
    end_epoch: int
    explore: tuple | None = None


class Finished(NamedTuple):
    """A finished segment as the population learns it (also from a results file on resume)."""

    trial_id: int
    member: int
    parent: int
    start_epoch: int
    end_epoch: int
    params: dict
    score: float | None  # None: failed
    bad_checkpoint: bool = False


class _Checkpoint(NamedTuple):
    trial_id: int
    epoch: int
    params: dict
    score: float


@dataclass
class _Member:
    index: int
    params: dict
    checkpoints: list[_Checkpoint] = field(default_factory=list)  # its own good ones, oldest first
    scores: list[tuple[int, float]] = field(default_factory=list)  # (end epoch, score), in order
    running: int | None = None  # trial id of its running segment
    next: Segment | None = None  # decided, waiting for a worker
    failures: int = 0
    gave_up: bool = False
    done: bool = False

    @property
    def epoch(self) -> int:
        return self.checkpoints[-1].epoch if self.checkpoints else 0

    @property
    def active(self) -> bool:
        return not (self.done or self.gave_up)


def perturb_value(param: Any, value: Any, factor: float, rng: np.random.Generator) -> Any:
    """``value`` of ``param`` moved by ``factor``: floats and ints multiplied (a value at 0 moves by ``factor - 1``
    of the range instead; a log parameter is always > 0), clipped to the bounds, ints rounded and moved at least one
    step in the factor's direction; a categorical moves to a neighbouring choice (inward at the ends)."""
    if isinstance(param, CategoricalParam):
        i, k = param.index(value), param.cardinality
        if k == 1:
            return value
        step = 1 if factor > 1 else -1
        j = i + step if 0 <= i + step < k else i - step
        return param.choices[j]
    if isinstance(param, FloatParam):
        moved = value * factor if value != 0 else (factor - 1) * (param.high - param.low)
        return float(min(param.high, max(param.low, moved)))
    if isinstance(param, IntParam):
        moved = value * factor if value != 0 else (factor - 1) * (param.high - param.low)
        rounded = int(round(moved))
        if rounded == value and factor != 1:
            rounded = value + (1 if factor > 1 else -1)
        return int(min(param.high, max(param.low, rounded)))
    return value  # fixed: never changes


def explore(space: Space, params: Mapping[str, Any], rng: np.random.Generator, resample_probability: float,
            perturb: tuple[float, ...]) -> dict:
    """New values from ``params``: each searched parameter resampled with ``resample_probability``, else perturbed."""
    new = dict(params)
    for param in space.searchable:
        if rng.random() < resample_probability:
            new[param.name] = param.from_unit(rng.random(1))[0]
        else:
            new[param.name] = perturb_value(param, params[param.name], float(rng.choice(perturb)), rng)
    return new


def quantile_size(n: int, quantile: float) -> int:
    """How many of ``n`` ranked members are the top (and the bottom): ``min(ceil(n * quantile), n // 2)``."""
    return min(math.ceil(n * quantile), n // 2)


class _Ranking:
    """The members' scores at one epoch, best first: those that got there as they were then, those one interval
    behind projected there. Sorted keys make a member's rank O(log n) and a change O(log n) plus a memmove."""

    def __init__(self, minimize: bool):
        self.minimize = minimize
        self.keys: list[tuple] = []  # (0, score as smaller-is-better, member); non-finite: (1, 0.0, member)
        self.key_of: dict[int, tuple] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def put(self, member: int, score: float) -> None:
        self.remove(member)
        key = (0, score if self.minimize else -score, member) if math.isfinite(score) else (1, 0.0, member)
        bisect.insort(self.keys, key)
        self.key_of[member] = key

    def remove(self, member: int) -> None:
        key = self.key_of.pop(member, None)
        if key is not None:
            del self.keys[bisect.bisect_left(self.keys, key)]

    def position(self, member: int) -> int:
        return bisect.bisect_left(self.keys, self.key_of[member])


class Population:
    """The members of one PBT phase and their lineage; see the module docstring.

    Every operation costs O(log members) plus what it hands back (an exploit walks the top quantile once), so the
    master can run it at any population size: a member's next segment waits in a heap of ready members, the
    segments that will restore a checkpoint are counted per checkpoint, checkpoints that may have become removable
    are collected as events free them, and each epoch keeps its ranking sorted (:class:`_Ranking`).
    """

    def __init__(self, space: Space, settings: PbtSettings, minimize: bool, rng: np.random.Generator):
        self.space, self.settings, self.minimize, self.rng = space, settings, minimize, rng
        first = space.sample(rng, settings.population)
        self.members = [_Member(i, params) for i, params in enumerate(first)]
        self.bad: set[int] = set()  # checkpoints found unusable
        self.started = 0  # segments handed out (re-runs after a kill not counted)
        self.exploits = 0
        self.notes: list[str] = []  # what a user should read in the log (a fresh start)
        self._best: _Checkpoint | None = None
        self._history: deque[tuple[int, dict, float]] = deque(maxlen=PB2_WINDOW)  # PB2: (end epoch, values, change)
        self._restoring: dict[int, int] = {}  # running trial -> the checkpoint it restored
        self._ends: dict[int, int] = {}  # running trial -> its end epoch
        self._running_params: dict[int, dict] = {}  # member -> the values of its running segment (PB2's pending)
        self._refs: dict[int, int] = {}  # checkpoint -> segments (running or decided) that will restore it
        self._owner: dict[int, int] = {}  # checkpoint -> the member that saved it
        self._on_disk: set[int] = set()  # checkpoints saved and not yet removed
        self._candidates: set[int] = set()  # checkpoints an event may have freed since the last removable()
        self._score_of: dict[int, float] = {}  # checkpoint -> the score of the segment that saved it
        self._rankings: dict[int, _Ranking] = {}  # epoch -> scores there
        self._ready: list[tuple[int, int, int]] = []  # heap of (start epoch, member, serial) of decided segments
        self._serial: dict[int, int] = {}  # member -> serial of its decided segment in the heap
        self._counter = 0
        self._left: dict[int, int] = {}  # member -> segments it has still to start
        self._left_total = 0
        self._running_count = 0
        self._pending_count = 0  # members with a decided segment
        self._active = len(self.members)  # members neither done nor given up
        for member in self.members:
            self._set_next(member, self._segment(member, member.params, -1, 0))

    # -- what the scheduler asks ---------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Every member trained all its epochs or was given up."""
        return self._active == 0

    def next_segment(self) -> Segment | None:
        """The segment to run now (the least advanced member's, then the lowest member), or None while none is
        ready."""
        while self._ready:
            _, index, serial = self._ready[0]
            member = self.members[index]
            if self._serial.get(index) == serial and member.next is not None and member.running is None:
                return member.next
            heapq.heappop(self._ready)
        return None

    def start(self, segment: Segment, trial_id: int, again: bool = False) -> None:
        """``segment`` runs now as trial ``trial_id`` (``again``: a segment that was running when the last job
        ended, restored from the file)."""
        member = self.members[segment.member]
        if again:  # not a decided segment: count the checkpoint it restores
            self._set_next(member, None)
            if segment.parent >= 0:
                self._refs[segment.parent] = self._refs.get(segment.parent, 0) + 1
        elif member.next is not None:  # its decided segment starts: the checkpoint it restores stays counted
            self._serial.pop(member.index, None)
            member.next = None
            self._pending_count -= 1
        member.running = trial_id
        self._running_count += 1
        self._restoring[trial_id] = segment.parent
        self._ends[trial_id] = segment.end_epoch
        self._running_params[member.index] = segment.params if segment.params is not None else member.params
        if not again:
            self.started += 1
        self._touch(member)

    def remaining(self) -> int:
        """Segments still to hand out (running ones not counted), if nobody jumps or fails from now on."""
        return self._left_total

    def keep(self) -> set[int]:
        """Checkpoints that must stay: each member's last two, the best, and every one a segment will restore."""
        keep = {c.trial_id for m in self.members for c in m.checkpoints[-KEEP_PER_MEMBER:]}
        if self._best is not None:
            keep.add(self._best.trial_id)
        keep |= set(self._refs)
        keep.discard(-1)
        return keep

    def _needed(self, trial_id: int) -> bool:
        if self._refs.get(trial_id) or (self._best is not None and self._best.trial_id == trial_id):
            return True
        owner = self._owner.get(trial_id)
        return owner is not None and any(
            c.trial_id == trial_id for c in self.members[owner].checkpoints[-KEEP_PER_MEMBER:])

    def removable(self) -> list[int]:
        """Checkpoints no one needs any more, not yet removed; they count as removed from now on."""
        gone = sorted(t for t in self._candidates if t in self._on_disk and not self._needed(t))
        self._candidates.clear()
        self._on_disk.difference_update(gone)
        return gone

    # -- results -----------------------------------------------------------------------

    def finish(self, result: Finished) -> None:
        """A segment ended (done or failed); decide what its member does next."""
        member = self.members[result.member]
        if member.running == result.trial_id:
            member.running = None
            self._running_count -= 1
            self._running_params.pop(member.index, None)
        parent = self._restoring.pop(result.trial_id, None)
        if parent is not None:
            self._release(parent)
        self._ends.pop(result.trial_id, None)
        self._learn(member, result)
        if self.settings.mode == "sync":
            self._maybe_next_generation()
        elif member.active and member.next is None and member.running is None:
            self._decide(member)
        self._touch(member)

    def restore(self, finished: Iterable[Finished], running: Iterable[tuple[int, Segment]]) -> None:
        """Rebuild the population from a results file: ``finished`` segments in the order they were stored, then
        the segments that were running when the last job ended (to run again now). Members whose last segment
        finished decide anew; members that never ran start from their first segment."""
        for result in finished:
            member = self.members[result.member]
            if result.score is not None or result.bad_checkpoint:
                member.params = dict(result.params)
            self._learn(member, result)
        for trial_id, segment in running:
            member = self.members[segment.member]
            member.params = dict(segment.params or member.params)
            self.start(segment, trial_id, again=True)
        if self.settings.mode == "sync":
            self._maybe_next_generation()
        else:
            for member in self.members:
                if member.active and member.running is None and member.next is None:
                    self._decide(member)
        for member in self.members:
            self._touch(member)

    # -- bookkeeping -----------------------------------------------------------------

    def _set_next(self, member: _Member, segment: Segment | None) -> None:
        """Decide (or, with None, undo) ``member``'s next segment: counted, and queued for a worker."""
        if member.next is not None:
            self._release(member.next.parent)
            self._serial.pop(member.index, None)
            self._pending_count -= 1
        member.next = segment
        if segment is not None:
            if segment.parent >= 0:
                self._refs[segment.parent] = self._refs.get(segment.parent, 0) + 1
            self._counter += 1
            self._serial[member.index] = self._counter
            heapq.heappush(self._ready, (segment.start_epoch, member.index, self._counter))
            self._pending_count += 1
        self._touch(member)

    def _release(self, trial_id: int) -> None:
        """One segment fewer will restore ``trial_id``."""
        if trial_id < 0:
            return
        count = self._refs.get(trial_id, 0) - 1
        if count > 0:
            self._refs[trial_id] = count
        else:
            self._refs.pop(trial_id, None)
            self._candidates.add(trial_id)

    def _touch(self, member: _Member) -> None:
        """Recount the segments ``member`` has still to start."""
        s = self.settings
        left = 0
        if member.active:
            if member.next is not None:
                left = math.ceil((s.epochs - member.next.start_epoch) / s.interval)
            elif member.running is None:  # deciding, or waiting for the generation (sync)
                left = math.ceil((s.epochs - member.epoch) / s.interval)
            else:
                end = self._ends.get(member.running, min(s.epochs, member.epoch + s.interval))
                left = math.ceil((s.epochs - end) / s.interval)
        self._left_total += left - self._left.get(member.index, 0)
        self._left[member.index] = left

    def _rank(self, epoch: int, member: int, score: float) -> None:
        ranking = self._rankings.get(epoch)
        if ranking is None:
            ranking = self._rankings[epoch] = _Ranking(self.minimize)
        ranking.put(member, score)

    def _unrank(self, member: _Member, above: int = -1) -> None:
        """Take ``member`` out of the rankings of epochs above ``above`` (all: it was given up)."""
        for epoch, ranking in self._rankings.items():
            if epoch > above:
                ranking.remove(member.index)

    def _learn(self, member: _Member, result: Finished) -> None:
        if result.score is None:  # failed
            member.failures += 1
            self._set_next(member, None)
            if result.bad_checkpoint and result.parent >= 0:
                self._forget(result.parent, member)
            if member.failures >= MAX_FAILURES:
                member.gave_up = True
                self._active -= 1
                self._unrank(member)
                self._touch(member)
                return
            if result.bad_checkpoint:
                self._set_next(member, self._back_to_last_good(member))
            else:  # the same segment again, from the same checkpoint
                self._set_next(member, self._segment(member, dict(result.params), result.parent, result.start_epoch))
            return
        member.failures = 0
        member.params = dict(result.params)
        checkpoint = _Checkpoint(result.trial_id, result.end_epoch, dict(result.params), result.score)
        previous = member.scores[-1] if member.scores else None
        if previous is not None and result.end_epoch <= previous[0]:  # it went back: its later places are stale
            self._unrank(member, above=result.end_epoch)
        member.checkpoints.append(checkpoint)
        member.scores.append((result.end_epoch, result.score))
        if len(member.checkpoints) > KEEP_PER_MEMBER:
            self._candidates.add(member.checkpoints[-KEEP_PER_MEMBER - 1].trial_id)
        self._owner[result.trial_id] = member.index
        self._on_disk.add(result.trial_id)
        self._score_of[result.trial_id] = result.score
        if self._better(checkpoint, self._best):
            if self._best is not None:
                self._candidates.add(self._best.trial_id)
            self._best = checkpoint
        changed_from = self._score_of.get(result.parent)
        if changed_from is not None:
            self._history.append((result.end_epoch, dict(result.params), result.score - changed_from))
        self._rank(result.end_epoch, member.index, result.score)
        if result.end_epoch < self.settings.epochs:  # where it is heading, for the members that get there first
            ahead = min(self.settings.epochs, result.end_epoch + self.settings.interval)
            projected = result.score
            if previous is not None and previous[0] < result.end_epoch:
                slope = (result.score - previous[1]) / (result.end_epoch - previous[0])
                if math.isfinite(result.score + slope * (ahead - result.end_epoch)):
                    projected = result.score + slope * (ahead - result.end_epoch)
            self._rank(ahead, member.index, projected)
        self._set_next(member, None)
        if result.end_epoch >= self.settings.epochs and not member.done:
            member.done = True
            self._active -= 1

    def _forget(self, trial_id: int, failed: _Member) -> None:
        """Checkpoint ``trial_id`` is unusable: never restored again; members about to copy it go back instead."""
        self.bad.add(trial_id)
        self._candidates.add(trial_id)
        for m in self.members:
            if any(c.trial_id == trial_id for c in m.checkpoints):
                m.checkpoints = [c for c in m.checkpoints if c.trial_id != trial_id]
            if m is not failed and m.next is not None and m.next.parent == trial_id:
                self._set_next(m, self._back_to_last_good(m))  # it was about to copy the unusable checkpoint

    def _back_to_last_good(self, member: _Member) -> Segment:
        """The next segment of ``member`` from its own last good checkpoint, with the values it had there; from
        scratch (said in :attr:`notes`) if it has none left."""
        if member.checkpoints:
            last = member.checkpoints[-1]
            member.params = dict(last.params)
            return self._segment(member, member.params, last.trial_id, last.epoch)
        self.notes.append(f"member {member.index} has no usable checkpoint left: it starts afresh from epoch 0")
        return self._segment(member, member.params, -1, 0)

    def _better(self, a: _Checkpoint, b: _Checkpoint | None) -> bool:
        if b is None:
            return True
        return a.score < b.score if self.minimize else a.score > b.score

    # -- decisions -----------------------------------------------------------------------

    def _segment(self, member: _Member, params: dict | None, parent: int, start: int,
                 explore_from: tuple | None = None) -> Segment:
        end = min(self.settings.epochs, start + self.settings.interval)
        return Segment(member.index, params, parent, start, end, explore_from)

    def _exploit_from(self, member: _Member) -> _Member | None:
        """The member ``member`` copies: a top member at random, when ``member`` is in the bottom at its epoch."""
        ranking = self._rankings.get(member.epoch)
        n = 0 if ranking is None else len(ranking)
        k = quantile_size(n, self.settings.quantile)
        if n < 2 or k == 0 or member.index not in ranking.key_of:
            return None
        if ranking.position(member.index) < n - k:
            return None
        mine, worst_top = ranking.key_of[member.index], ranking.keys[k - 1]
        if mine[0] == worst_top[0] == 0 and mine[1] == worst_top[1]:
            return None  # ties with the top: copying an equal gains nothing
        donors = [self.members[key[2]] for key in ranking.keys[:k]]
        donors = [d for d in donors if d is not member and not d.gave_up and d.checkpoints
                  and d.epoch < self.settings.epochs]
        return donors[int(self.rng.integers(len(donors)))] if donors else None

    def _decide(self, member: _Member) -> None:
        """The next segment of ``member``, whose last segment just ended: exploit and explore, or go on."""
        donor = self._exploit_from(member) if member.checkpoints else None
        if donor is not None:
            source = donor.checkpoints[-1]
            self.exploits += 1
            if self.settings.explore == "pb2":
                running = [p for i, p in self._running_params.items() if i != member.index]
                self._set_next(member, self._segment(member, None, source.trial_id, source.epoch,
                                                     (dict(source.params), list(self._history), running)))
                return
            params = explore(self.space, source.params, self.rng, self.settings.resample_probability,
                             self.settings.perturb)
            self._set_next(member, self._segment(member, params, source.trial_id, source.epoch))
            return
        if not member.checkpoints:  # failed before its first checkpoint: starts again
            self._set_next(member, member.next or self._segment(member, member.params, -1, 0))
            return
        self._set_next(member, self._segment(member, member.params, member.checkpoints[-1].trial_id, member.epoch))

    def _maybe_next_generation(self) -> None:
        """Sync: once no member runs and none waits, every member that goes on decides, ranked at one epoch."""
        if self._running_count or self._pending_count:
            return  # a generation (or a retry) is still being handed out
        for member in self.members:
            if member.active:
                self._decide(member)

    def chosen(self, member: int, params: dict) -> None:
        """The worker chose the values of ``member``'s running segment (PB2)."""
        self.members[member].params = dict(params)
        if member in self._running_params:
            self._running_params[member] = dict(params)
