"""The master's progress: a bar on a terminal, or a summary line every few seconds in a batch log.

Fast searches would drown a batch log in per-trial lines, so per-trial lines are debug
output (``-v``); by default the master says where the search stands every 10 seconds, or
after every N finished trials (``--progress-every 25t``, but not more than a line every 2 s),
and when a trial beats the best so far. On a terminal (``--progress bar``, or
``auto`` when stderr is one) a bar redrawn at most twice a second takes the place of the
summary lines; new-best and failure lines still appear above it.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import NamedTuple

from ..logs import set_status_line
from ..results.records import DONE, PRUNED, TrialRecord, describe_params, format_duration
from .scheduler import Progress

log = logging.getLogger("hpc_hpo.run.master")


class ProgressInterval(NamedTuple):
    """When a summary line is due: every ``seconds``, or after every ``trials`` finished trials."""

    seconds: float = 10.0
    trials: int = 0  # > 0: count trials, not seconds

    @classmethod
    def parse(cls, text: str) -> ProgressInterval:
        """``10`` or ``10s``: seconds; ``25t``: trials. ValueError says the rule."""
        match = re.fullmatch(r"\s*(\d+|\d*\.\d+|\d+\.)\s*(s|t|trials?)?\s*", text)
        if match is not None:
            number, in_seconds = match[1], match[2] in (None, "s")
            if in_seconds and float(number) > 0:
                return cls(seconds=float(number))
            if not in_seconds and number.isdigit() and int(number) > 0:
                return cls(trials=int(number))
        raise ValueError(f"must be seconds (10, 10s) or a whole number of finished trials (25t), > 0 (got {text!r})")


class ProgressReporter:
    """Logs progress lines; cheap enough to call after every result."""

    #: Seconds between two drawings of the bar.
    BAR_EVERY = 0.5
    BAR_WIDTH = 24
    #: Counting trials, never more than one line in this many seconds.
    MIN_LINE_GAP = 2.0

    def __init__(self, progress: Progress, every: ProgressInterval | None = None, bar: bool = False, stream=None):
        self.progress = progress
        self.every = every or ProgressInterval()
        self._finished_at_line = progress.finished
        self.bar = bar
        self.stream = stream or sys.stderr
        self._bar_text = ""
        self._running = 0
        self.started = time.monotonic()
        self._last = self.started
        self._best_reported: int | None = None
        self.finished_before = progress.finished  # restored from the results file: not this job's pace

    def trial(self, record: TrialRecord) -> None:
        p = self.progress
        if record.status == PRUNED:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("trial %d pruned after %d epochs at %.6g on rank %d", record.trial_id, record.epochs,
                          record.value, record.rank)
        elif record.status != DONE:
            log.warning("trial %d %s on rank %d: %s", record.trial_id, record.status, record.rank,
                        record.error.splitlines()[0])
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("trial %d done %.6g in %.3fs on rank %d", record.trial_id, record.value,
                      record.t_end - record.t_start, record.rank)
        if p.best_trial == record.trial_id and p.best_trial != self._best_reported:
            self._best_reported = p.best_trial
            log.info("trial %d new best %.6g  %s", record.trial_id, record.value, describe_params(record.params))
        self.tick(self._running)  # the master may never be idle (one process: trials run inside it)

    def tick(self, running: int) -> None:
        now = time.monotonic()
        self._running = running
        if self.bar:
            if now - self._last >= self.BAR_EVERY:
                self._last = now
                self._bar_text = self.bar_text(running)
                set_status_line(self)
                self.redraw()
        elif self._line_due(now):
            self._last, self._finished_at_line = now, self.progress.finished
            log.info(self.line(running))

    def _line_due(self, now: float) -> bool:
        if self.every.trials:
            return (self.progress.finished - self._finished_at_line >= self.every.trials
                    and now - self._last >= self.MIN_LINE_GAP)
        return now - self._last >= self.every.seconds

    def bar_text(self, running: int) -> str:
        p = self.progress
        filled = int(self.BAR_WIDTH * min(1.0, p.finished / p.budget)) if p.budget else 0
        return f"[{'#' * filled}{'-' * (self.BAR_WIDTH - filled)}] {self.line(running)}"

    def clear(self) -> None:
        if self._bar_text:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def redraw(self) -> None:
        if self._bar_text:
            self.stream.write("\r\033[K" + self._bar_text)
            self.stream.flush()

    def close(self) -> None:
        """Take the bar away for good (before the closing lines)."""
        if self.bar:
            self.clear()
            self._bar_text = ""
            set_status_line(None)

    def line(self, running: int, time_left: bool = True) -> str:
        """The summary: counts, best so far, pace and (unless not ``time_left``) the time left."""
        p = self.progress
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = (p.finished - self.finished_before) / elapsed
        pruned = f"{p.pruned} pruned, " if p.pruned else ""
        text = f"{p.finished}/{p.budget} finished ({pruned}{p.failed} failed), {running} running"
        if p.best_value is not None:
            text += f", best {p.best_value:.6g} (trial {p.best_trial})"
        text += f", {rate * 3600:.0f} trials/h" if rate < 1 else f", {rate:.1f} trials/s"
        remaining = p.budget - p.finished
        if time_left and remaining > 0 and rate > 0:
            text += f", about {format_duration(remaining / rate)} left"
        return text
