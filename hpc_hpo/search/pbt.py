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


def split(scores: Mapping[int, float], quantile: float, minimize: bool) -> tuple[list[int], list[int]]:
    """(top, bottom) members of ``scores`` (member -> score): the best and the worst k each, k = min(ceil(n *
    quantile), n // 2); ties are ranked by member index, and a bottom member that ties with a top one is dropped
    from the bottom. Non-finite scores rank last."""
    def key(member: int) -> tuple:
        score = scores[member]
        if not math.isfinite(score):
            return (1, 0.0, member)
        return (0, score if minimize else -score, member)

    ranked = sorted(scores, key=key)
    n = len(ranked)
    k = min(math.ceil(n * quantile), n // 2)
    if k == 0:
        return [], []
    top, bottom = ranked[:k], ranked[n - k:]
    top_scores = {scores[m] for m in top}
    return top, [m for m in bottom if scores[m] not in top_scores]


class Population:
    """The members of one PBT phase and their lineage; see the module docstring."""

    def __init__(self, space: Space, settings: PbtSettings, minimize: bool, rng: np.random.Generator):
        self.space, self.settings, self.minimize, self.rng = space, settings, minimize, rng
        first = space.sample(rng, settings.population)
        self.members = [_Member(i, params) for i, params in enumerate(first)]
        for member in self.members:
            member.next = self._segment(member, member.params, -1, 0)
        self.bad: set[int] = set()  # checkpoints found unusable
        self.deleted: set[int] = set()  # checkpoints removed to bound disk use
        self.started = 0  # segments handed out (re-runs after a kill not counted)
        self.exploits = 0
        self.notes: list[str] = []  # what a user should read in the log (a fresh start)
        self._best: _Checkpoint | None = None
        self._history: deque[tuple[int, dict, float]] = deque(maxlen=PB2_WINDOW)  # PB2: (end epoch, values, change)
        self._restoring: dict[int, int] = {}  # running trial -> the checkpoint it restored
        self._ends: dict[int, int] = {}  # running trial -> its end epoch

    # -- what the scheduler asks ---------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Every member trained all its epochs or was given up."""
        return not any(m.active for m in self.members)

    def next_segment(self) -> Segment | None:
        """The segment to run now (the least advanced member's), or None while none is ready."""
        ready = [m for m in self.members if m.next is not None and m.running is None and m.active]
        if not ready:
            return None
        member = min(ready, key=lambda m: (m.next.start_epoch, m.index))
        return member.next

    def start(self, segment: Segment, trial_id: int, again: bool = False) -> None:
        """``segment`` runs now as trial ``trial_id`` (``again``: a segment that was running when the last job
        ended, restored from the file)."""
        member = self.members[segment.member]
        member.running, member.next = trial_id, None
        self._restoring[trial_id] = segment.parent
        self._ends[trial_id] = segment.end_epoch
        if not again:
            self.started += 1

    def remaining(self) -> int:
        """Segments still to hand out (running ones not counted), if nobody jumps or fails from now on."""
        total = 0
        for m in self.members:
            if not m.active:
                continue
            if m.next is not None:
                total += math.ceil((self.settings.epochs - m.next.start_epoch) / self.settings.interval)
            elif m.running is None:  # waiting for the generation (sync)
                total += math.ceil((self.settings.epochs - m.epoch) / self.settings.interval)
            else:
                end = self._ends.get(m.running, min(self.settings.epochs, m.epoch + self.settings.interval))
                total += math.ceil((self.settings.epochs - end) / self.settings.interval)
        return total

    def keep(self) -> set[int]:
        """Checkpoints that must stay: each member's last two, the best, and every one a segment will restore."""
        keep = {c.trial_id for m in self.members for c in m.checkpoints[-KEEP_PER_MEMBER:]}
        if self._best is not None:
            keep.add(self._best.trial_id)
        keep |= {m.next.parent for m in self.members if m.next is not None}
        keep |= set(self._restoring.values())
        keep.discard(-1)
        return keep

    def removable(self) -> list[int]:
        """Checkpoints no one needs any more, not yet removed; they count as removed from now on."""
        keep = self.keep()
        gone = sorted(c.trial_id for m in self.members for c in m.checkpoints if c.trial_id not in keep
                      and c.trial_id not in self.deleted)
        gone += sorted(t for t in self.bad if t not in keep and t not in self.deleted)
        self.deleted.update(gone)
        return gone

    # -- results -----------------------------------------------------------------------

    def finish(self, result: Finished) -> None:
        """A segment ended (done or failed); decide what its member does next."""
        member = self.members[result.member]
        if member.running == result.trial_id:
            member.running = None
        self._restoring.pop(result.trial_id, None)
        self._ends.pop(result.trial_id, None)
        self._learn(member, result)
        if self.settings.mode == "sync":
            self._maybe_next_generation()
        elif member.active and member.next is None and member.running is None:
            self._decide(member)

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
            return
        for member in self.members:
            if member.active and member.running is None and member.next is None:
                self._decide(member)

    def _learn(self, member: _Member, result: Finished) -> None:
        if result.score is None:  # failed
            member.failures += 1
            member.next = None
            if result.bad_checkpoint and result.parent >= 0:
                self.bad.add(result.parent)
                for m in self.members:
                    m.checkpoints = [c for c in m.checkpoints if c.trial_id != result.parent]
                    if m is not member and m.next is not None and m.next.parent == result.parent:
                        m.next = self._back_to_last_good(m)  # it was about to copy the unusable checkpoint
            if member.failures >= MAX_FAILURES:
                member.gave_up = True
                return
            if result.bad_checkpoint:
                member.next = self._back_to_last_good(member)
            else:  # the same segment again, from the same checkpoint
                member.next = self._segment(member, dict(result.params), result.parent, result.start_epoch)
            return
        member.failures = 0
        member.params = dict(result.params)
        checkpoint = _Checkpoint(result.trial_id, result.end_epoch, dict(result.params), result.score)
        member.checkpoints.append(checkpoint)
        member.scores.append((result.end_epoch, result.score))
        if self._better(checkpoint, self._best):
            self._best = checkpoint
        previous = self._score_at(result.parent, result.start_epoch)
        if previous is not None:
            self._history.append((result.end_epoch, dict(result.params), result.score - previous))
        member.next = None
        if result.end_epoch >= self.settings.epochs:
            member.done = True

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

    def _score_at(self, trial_id: int, epoch: int) -> float | None:
        for m in self.members:
            for c in m.checkpoints:
                if c.trial_id == trial_id:
                    return c.score
        return None

    # -- decisions -----------------------------------------------------------------------

    def _segment(self, member: _Member, params: dict | None, parent: int, start: int,
                 explore_from: tuple | None = None) -> Segment:
        end = min(self.settings.epochs, start + self.settings.interval)
        return Segment(member.index, params, parent, start, end, explore_from)

    def _score_for_ranking(self, member: _Member, epoch: int) -> float | None:
        """``member``'s score at ``epoch``: as it was then for a member that got there; projected to ``epoch`` along
        the line through its last two scores for one at most an interval behind (its first score as it is); None
        for one further behind (it would hold the bottom for as long as it lags)."""
        if not member.scores or member.scores[-1][0] < epoch - self.settings.interval:
            return None
        at_or_before = [(e, s) for e, s in member.scores if e <= epoch]
        if not at_or_before:
            return None
        end, score = at_or_before[-1]
        if end < epoch and len(at_or_before) >= 2 and at_or_before[-2][0] < end:  # behind: where it is heading
            end0, score0 = at_or_before[-2]
            projected = score + (score - score0) * (epoch - end) / (end - end0)
            if math.isfinite(projected):
                return projected
        return score

    def _decide(self, member: _Member) -> None:
        """The next segment of ``member``, whose last segment just ended: exploit and explore, or go on."""
        epoch = member.epoch
        scores = {}
        for m in self.members:
            if m.gave_up:
                continue
            score = self._score_for_ranking(m, epoch)
            if score is not None:
                scores[m.index] = score
        top, bottom = split(scores, self.settings.quantile, self.minimize) if len(scores) >= 2 else ([], [])
        donors = [self.members[i] for i in top if i != member.index and self.members[i].checkpoints
                  and self.members[i].epoch < self.settings.epochs]
        if member.index in bottom and donors:
            donor = donors[int(self.rng.integers(len(donors)))]
            source = donor.checkpoints[-1]
            self.exploits += 1
            if self.settings.explore == "pb2":
                running = [m.params for m in self.members if m.running is not None]
                member.next = self._segment(member, None, source.trial_id, source.epoch,
                                            (dict(source.params), list(self._history), running))
                return
            params = explore(self.space, source.params, self.rng, self.settings.resample_probability,
                             self.settings.perturb)
            member.next = self._segment(member, params, source.trial_id, source.epoch)
            return
        if not member.checkpoints:  # failed before its first checkpoint: already has its next
            member.next = member.next or self._segment(member, member.params, -1, 0)
            return
        member.next = self._segment(member, member.params, member.checkpoints[-1].trial_id, epoch)

    def _maybe_next_generation(self) -> None:
        """Sync: once no member runs and none waits, every member that goes on decides, ranked at one epoch."""
        active = [m for m in self.members if m.active]
        if any(m.running is not None for m in active):
            return
        if any(m.next is not None for m in active):
            return  # a generation (or a retry) is still being handed out
        for member in active:
            self._decide(member)

    def chosen(self, member: int, params: dict) -> None:
        """The worker chose the values of ``member``'s running segment (PB2)."""
        self.members[member].params = dict(params)
