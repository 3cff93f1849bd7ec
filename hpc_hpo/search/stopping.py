"""Early-stopping rules: which running trials to stop, from the metrics they report after each epoch.

A rule is a pure state machine beside the strategies: :meth:`StoppingRule.handle` takes one
report of one trial (its epoch and the metric's value) and returns a :class:`Decision`, or None
when the report is not a point at which that trial is judged. No MPI, no HDF5, no waiting: a
decision uses only what has been reported so far, so no trial ever waits for a rung to fill.

Epochs are counted as ``trial.report`` and Keras count them: from 0, so a report of epoch ``e``
means ``e + 1`` epochs trained. Rungs are numbers of epochs trained: with ``min_epochs = 1``,
``max_epochs = 27`` and ``reduction_factor = 3`` a trial is judged after 1, 3 and 9 epochs.

- ``asha`` (asynchronous successive halving): at each rung a trial goes on if it is among the best
  ``ceil(n / eta)`` of the ``n`` trials that have reached that rung so far, itself included (the
  first trial at a rung always goes on; a value tied with the cut goes on).
- ``hyperband``: ``brackets`` ASHAs whose first rungs are ``min_epochs * eta**b``; each trial belongs
  to one bracket, chosen from its id (resumes keep it), with Hyperband's shares: most trials in the
  most aggressive bracket.
- ``median``: from ``min_epochs`` on, after every epoch a trial stops if its best value so far is
  worse than the median of the best values so far of the other trials at the same epoch (once at
  least ``MEDIAN_MIN_OTHERS`` others got there).

Values are compared in the experiment's direction (``minimize``); a value that is not finite is
the worst there is. :meth:`StoppingRule.levels` gives, per trial, its value at each rung of the
rule's ``ladder`` (every rung any trial may have) up to the last it reached, NaN where it was not
judged: what a Bayesian search learns from (see :mod:`hpc_hpo.search.gp.suggester`).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from typing import NamedTuple

RULES = ("none", "asha", "hyperband", "median")
#: The median rule judges a trial only once this many other trials reported the same epoch.
MEDIAN_MIN_OTHERS = 4
#: The golden ratio's fractional part: trial ids spread evenly over Hyperband's brackets.
_GOLDEN = (math.sqrt(5) - 1) / 2


class Report(NamedTuple):
    """A running trial reported ``value`` of the rule's metric after epoch ``epoch`` (0-based)."""

    trial_id: int
    epoch: int
    value: float


class Decision(NamedTuple):
    """Whether the trial goes on; ``rung`` is the number of epochs trained at which it was judged."""

    stop: bool
    rung: int


def asha_rungs(min_epochs: int, max_epochs: int, eta: float) -> tuple[int, ...]:
    """Epochs trained at which ASHA judges: ``min_epochs * eta**k`` below ``max_epochs`` (rounded, distinct)."""
    rungs: list[int] = []
    k = 0
    while True:
        rung = int(round(min_epochs * eta**k))
        if rung >= max_epochs:
            return tuple(rungs)
        if not rungs or rung > rungs[-1]:
            rungs.append(rung)
        k += 1


def max_brackets(min_epochs: int, max_epochs: int, eta: float) -> int:
    """How many Hyperband brackets fit: one per rung of the most aggressive one, plus one that never stops."""
    return len(asha_rungs(min_epochs, max_epochs, eta)) + 1


class StoppingRule:
    """Base of the rules: per trial, the rungs it is judged at and its values there."""

    name = "none"
    #: Every rung (epochs trained) at which some trial may be judged, in order.
    ladder: tuple[int, ...] = ()

    def __init__(self, min_epochs: int, max_epochs: int, reduction_factor: float = 3.0, minimize: bool = True):
        self.min_epochs = min_epochs
        self.max_epochs = max_epochs
        self.eta = float(reduction_factor)
        self.sign = 1.0 if minimize else -1.0
        self._next: dict[int, int] = {}  # trial -> index of the next rung it is judged at
        self._levels: dict[int, dict[int, float]] = {}  # trial -> rung -> its value there
        self.stopped_at: dict[int, int] = {}  # trial -> the rung (epochs trained) where it was stopped

    def rungs_for(self, trial_id: int) -> tuple[int, ...]:
        """Numbers of epochs trained after which ``trial_id`` is judged (what its worker waits on)."""
        return ()

    def handle(self, report: Report) -> Decision | None:
        """Judge a report: a Decision when it crosses a rung of its trial not judged yet, else None."""
        rungs = self.rungs_for(report.trial_id)
        trained = report.epoch + 1
        index = self._next.get(report.trial_id, 0)
        if index >= len(rungs) or trained < rungs[index] or report.trial_id in self.stopped_at:
            return None
        score = self.sign * report.value if math.isfinite(report.value) else math.inf
        stop = False
        while index < len(rungs) and trained >= rungs[index] and not stop:
            stop = self._judge(report.trial_id, index, rungs[index], score)
            self._levels.setdefault(report.trial_id, {})[rungs[index]] = report.value
            index += 1
        self._next[report.trial_id] = index
        if stop:
            self.stopped_at[report.trial_id] = rungs[index - 1]
        return Decision(stop, rungs[index - 1])

    def _judge(self, trial_id: int, index: int, rung: int, score: float) -> bool:
        """Each rule's own decision at rung ``index`` (``score``: lower is better); True stops the trial."""
        raise NotImplementedError  # the rules override it; NoStopping never gets here (it judges nothing)

    def levels(self, trial_id: int) -> tuple[float, ...]:
        """The trial's value of the metric at each rung of ``ladder`` up to the last it reached (NaN where it was
        not judged: below the first rung of its Hyperband bracket)."""
        values = self._levels.get(trial_id)
        if not values:
            return ()
        last = max(values)
        return tuple(values.get(rung, math.nan) for rung in self.ladder if rung <= last)

    def replay(self, reports: Iterable[Report]) -> None:
        """Rebuild the rungs from reports of an earlier job (in the order they came); decisions are dropped.

        Give only the reports of trials that finished: a trial that runs again after a kill is judged afresh."""
        for report in reports:
            self.handle(report)

    def rung_counts(self) -> dict[int, tuple[int, int]]:
        """Per rung (epochs trained): (trials judged there, trials stopped there)."""
        counts: dict[int, list[int]] = {}
        for trial_id, index in self._next.items():
            rungs = self.rungs_for(trial_id)
            for rung in rungs[:index]:
                counts.setdefault(rung, [0, 0])[0] += 1
            if trial_id in self.stopped_at:
                counts[self.stopped_at[trial_id]][1] += 1
        return {rung: (judged, stopped) for rung, (judged, stopped) in sorted(counts.items())}


class NoStopping(StoppingRule):
    """``rule = "none"``: every trial trains to the end."""

    def handle(self, report: Report) -> Decision | None:
        return None


class Asha(StoppingRule):
    """Asynchronous successive halving: the best ``1/eta`` of each rung so far go on (see the module docstring)."""

    name = "asha"

    def __init__(self, min_epochs: int, max_epochs: int, reduction_factor: float = 3.0, minimize: bool = True):
        super().__init__(min_epochs, max_epochs, reduction_factor, minimize)
        self.rungs = self.ladder = asha_rungs(min_epochs, max_epochs, self.eta)
        self._scores: list[list[float]] = [[] for _ in self.rungs]  # per rung, sorted: lower is better

    def rungs_for(self, trial_id: int) -> tuple[int, ...]:
        return self.rungs

    def _judge(self, trial_id: int, index: int, rung: int, score: float) -> bool:
        return keep_or_stop(self._scores[index], score, self.eta)


def keep_or_stop(scores: list[float], score: float, eta: float) -> bool:
    """Insert ``score`` into the sorted ``scores`` of a rung; True (stop) unless it is among the best ``ceil(n/eta)``."""
    better = bisect.bisect_left(scores, score)  # strictly better than it: a tie never stops a trial
    bisect.insort(scores, score)
    return better >= math.ceil(len(scores) / eta)


class Hyperband(StoppingRule):
    """Asynchronous Hyperband: several ASHAs with later first rungs; trials are spread over them."""

    name = "hyperband"

    def __init__(self, min_epochs: int, max_epochs: int, reduction_factor: float = 3.0, minimize: bool = True,
                 brackets: int = 0):
        super().__init__(min_epochs, max_epochs, reduction_factor, minimize)
        most = max_brackets(min_epochs, max_epochs, self.eta)
        self.brackets = most if brackets <= 0 else min(brackets, most)
        base = self.ladder = asha_rungs(min_epochs, max_epochs, self.eta)
        self.bracket_rungs = [base[b:] for b in range(self.brackets)]
        # Hyperband's shares: bracket b starts trials after min_epochs * eta**b epochs, and gets
        # eta**(s_max - b) / (s_max - b + 1) of them (s_max = most - 1): many cheap, few expensive.
        s_max = most - 1
        weights = [self.eta ** (s_max - b) / (s_max - b + 1) for b in range(self.brackets)]
        total = sum(weights)
        self._cumulative = [sum(weights[: b + 1]) / total for b in range(self.brackets)]
        self._scores = [[[] for _ in rungs] for rungs in self.bracket_rungs]

    def bracket(self, trial_id: int) -> int:
        """The bracket of a trial: from its id alone, so a resumed job puts it in the same one."""
        u = (trial_id * _GOLDEN) % 1.0
        return min(bisect.bisect_right(self._cumulative, u), self.brackets - 1)

    def rungs_for(self, trial_id: int) -> tuple[int, ...]:
        return self.bracket_rungs[self.bracket(trial_id)]

    def _judge(self, trial_id: int, index: int, rung: int, score: float) -> bool:
        return keep_or_stop(self._scores[self.bracket(trial_id)][index], score, self.eta)


class Median(StoppingRule):
    """The median stopping rule: stop a trial whose best so far is worse than the others' median at that epoch."""

    name = "median"

    def __init__(self, min_epochs: int, max_epochs: int, reduction_factor: float = 3.0, minimize: bool = True):
        super().__init__(min_epochs, max_epochs, reduction_factor, minimize)
        self.rungs = self.ladder = tuple(range(min_epochs, max_epochs))
        self._best: dict[int, float] = {}  # trial -> its best score so far
        self._at: dict[int, list[float]] = {}  # epochs trained -> sorted best-so-far scores of the trials there

    def rungs_for(self, trial_id: int) -> tuple[int, ...]:
        return self.rungs

    def handle(self, report: Report) -> Decision | None:
        if math.isfinite(report.value) and report.epoch + 1 < self.min_epochs:  # before the first rung: best so far
            score = self.sign * report.value
            self._best[report.trial_id] = min(self._best.get(report.trial_id, math.inf), score)
        return super().handle(report)

    def _judge(self, trial_id: int, index: int, rung: int, score: float) -> bool:
        best = self._best[trial_id] = min(self._best.get(trial_id, math.inf), score)
        others = self._at.setdefault(rung, [])
        stop = False
        if len(others) >= MEDIAN_MIN_OTHERS:
            n = len(others)
            median = others[n // 2] if n % 2 else (others[n // 2 - 1] + others[n // 2]) / 2
            stop = best > median
        bisect.insort(others, best)
        return stop


def make_rule(rule: str, min_epochs: int, max_epochs: int, reduction_factor: float, minimize: bool,
              brackets: int = 0) -> StoppingRule:
    """The rule named ``rule`` (one of :data:`RULES`)."""
    if rule == "hyperband":
        return Hyperband(min_epochs, max_epochs, reduction_factor, minimize, brackets)
    cls = {"none": NoStopping, "asha": Asha, "median": Median}[rule]
    return cls(min_epochs, max_epochs, reduction_factor, minimize)
