"""The master's summary lines: when they come (a fake clock; the wording is tested under mpirun)."""

from __future__ import annotations

import logging

import pytest

from hpc_hpo.run import progress as progress_module
from hpc_hpo.run.progress import ProgressInterval, ProgressReporter
from hpc_hpo.run.scheduler import Progress


class Clock:
    def __init__(self):
        self.now = 100.0

    def monotonic(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress_module, "time", clock)
    return clock


def finish_trials(reporter, clock, count, seconds_each):
    """Finish ``count`` trials, ``seconds_each`` apart; the times of the summary lines logged."""
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append((clock.now, record.getMessage()))
    logger = logging.getLogger("hpc_hpo.run.master")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        for _ in range(count):
            clock.now += seconds_each
            reporter.progress.done += 1
            reporter.tick(running=2)
    finally:
        logger.removeHandler(handler)
    return [(t, text) for t, text in lines if " finished (" in text]


@pytest.mark.parametrize("text, every", [
    ("10", ProgressInterval(seconds=10.0)), ("2.5s", ProgressInterval(seconds=2.5)), (" 30 s ", ProgressInterval(seconds=30.0)),
    ("25t", ProgressInterval(trials=25)), ("1 trial", ProgressInterval(trials=1)), ("100trials", ProgressInterval(trials=100)),
])
def test_progress_every_reads_seconds_or_trials(text, every):
    assert ProgressInterval.parse(text) == every


@pytest.mark.parametrize("text", ["0", "0t", "-5", "2.5t", "ten", "10m", "t", ""])
def test_progress_every_refuses_what_it_cannot_count(text):
    with pytest.raises(ValueError, match=r"must be seconds \(10, 10s\) or a whole number of finished trials \(25t\)"):
        ProgressInterval.parse(text)


def test_by_default_a_line_every_ten_seconds_whatever_the_trials(clock):
    reporter = ProgressReporter(Progress(budget=1000), every=ProgressInterval(seconds=10.0))
    lines = finish_trials(reporter, clock, 100, seconds_each=1.0)  # 100 s of 1 s trials
    assert [t for t, _ in lines] == [110.0 + 10 * i for i in range(10)]
    assert lines[0][1].startswith("10/1000 finished (0 failed), 2 running")


def test_counting_trials_a_line_after_every_n_finished(clock):
    reporter = ProgressReporter(Progress(budget=1000), every=ProgressInterval(trials=25))
    lines = finish_trials(reporter, clock, 100, seconds_each=60.0)  # hour-long searches: 4 lines, not 600
    assert [text.split(" ")[0] for _, text in lines] == ["25/1000", "50/1000", "75/1000", "100/1000"]


def test_counting_trials_fast_ones_never_flood_the_log(clock):
    reporter = ProgressReporter(Progress(budget=10_000), every=ProgressInterval(trials=1))
    lines = finish_trials(reporter, clock, 1000, seconds_each=0.01)  # 1,000 trials in 10 s
    times = [t for t, _ in lines]
    assert 4 <= len(times) <= 5 and all(b - a >= ProgressReporter.MIN_LINE_GAP for a, b in zip(times, times[1:], strict=False))
