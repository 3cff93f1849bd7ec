"""The stopping rules against rungs worked out by hand (no MPI, no files)."""

from __future__ import annotations

import math

import pytest

from hpc_hpo.search.stopping import (
    MEDIAN_MIN_OTHERS,
    Asha,
    Decision,
    Hyperband,
    Median,
    NoStopping,
    Report,
    asha_rungs,
    make_rule,
    max_brackets,
)


def test_asha_rungs_are_min_times_powers_of_eta_below_max():
    assert asha_rungs(1, 27, 3) == (1, 3, 9)
    assert asha_rungs(1, 28, 3) == (1, 3, 9, 27)
    assert asha_rungs(2, 100, 2) == (2, 4, 8, 16, 32, 64)
    assert asha_rungs(5, 5, 3) == ()
    assert asha_rungs(1, 10, 1.5) == (1, 2, 3, 5, 8)  # rounded, each rung a later epoch than the one before
    assert max_brackets(1, 27, 3) == 4


def test_asha_keeps_the_best_third_of_each_rung_so_far():
    rule = Asha(1, 27, 3)
    # Rung 1 (report of epoch 0). n trials so far -> the best ceil(n/3) go on.
    assert rule.handle(Report(0, 0, 5.0)) == Decision(False, 1)  # n=1: keep 1, it is the best
    assert rule.handle(Report(1, 0, 6.0)) == Decision(True, 1)   # n=2: keep 1; 5.0 is better
    assert rule.handle(Report(2, 0, 4.0)) == Decision(False, 1)  # n=3: keep 1; it is the best
    assert rule.handle(Report(3, 0, 4.5)) == Decision(False, 1)  # n=4: keep 2; one better (4.0)
    assert rule.handle(Report(4, 0, 4.6)) == Decision(True, 1)   # n=5: keep 2; two better (4.0, 4.5)
    # Epochs between rungs are not judged; rung 3 is the report of epoch 2.
    assert rule.handle(Report(0, 1, 3.0)) is None
    assert rule.handle(Report(0, 2, 3.0)) == Decision(False, 3)
    assert rule.handle(Report(2, 2, 3.5)) == Decision(True, 3)   # n=2 at rung 3: keep 1, 3.0 is better
    # A stopped trial is never judged again.
    assert rule.handle(Report(2, 8, 0.1)) is None
    assert rule.stopped_at == {1: 1, 4: 1, 2: 3}
    assert rule.levels(0) == (5.0, 3.0)
    assert rule.levels(1) == (6.0,)
    assert rule.levels(2) == (4.0, 3.5)
    assert rule.rung_counts() == {1: (5, 2), 3: (2, 1)}


def test_a_tie_with_the_cut_goes_on():
    rule = Asha(1, 9, 3)
    assert not rule.handle(Report(0, 0, 1.0)).stop
    assert not rule.handle(Report(1, 0, 1.0)).stop  # n=2, keep 1, nobody strictly better


def test_maximize_keeps_the_largest():
    rule = Asha(1, 9, 2, minimize=False)
    assert not rule.handle(Report(0, 0, 0.5)).stop
    assert rule.handle(Report(1, 0, 0.4)).stop
    assert not rule.handle(Report(2, 0, 0.9)).stop


def test_a_value_that_is_not_finite_is_the_worst():
    rule = Asha(1, 9, 3)
    rule.handle(Report(0, 0, 1.0))
    assert rule.handle(Report(1, 0, math.nan)).stop
    assert Asha(1, 9, 3, minimize=False).handle(Report(0, 0, math.inf)) == Decision(False, 1)  # alone: kept


def test_a_report_that_skips_rungs_is_judged_at_each_with_its_value():
    rule = Asha(1, 27, 3)
    rule.handle(Report(0, 0, 1.0))
    rule.handle(Report(0, 2, 1.0))
    # Trial 1 reports first after 9 epochs: judged at rungs 1, 3 and 9 with 0.5; the best everywhere.
    assert rule.handle(Report(1, 8, 0.5)) == Decision(False, 9)
    assert rule.levels(1) == (0.5, 0.5, 0.5)
    # Trial 2 crosses rungs 1 and 3 with 2.0: at rung 1, n=3 keeps 1 and two are better: stopped there.
    assert rule.handle(Report(2, 4, 2.0)) == Decision(True, 1)


def test_few_trials_never_wait_and_the_first_at_each_rung_goes_on():
    rule = Asha(1, 100, 3)
    for epoch in range(99):
        decision = rule.handle(Report(7, epoch, 10.0 - epoch * 0.01))
        assert decision is None or not decision.stop


def test_hyperband_spreads_trials_over_brackets_most_into_the_aggressive_one():
    rule = Hyperband(1, 27, 3)
    assert rule.brackets == 4
    assert rule.bracket_rungs == [(1, 3, 9), (3, 9), (9,), ()]
    counts = [0] * 4
    for trial_id in range(8100):
        counts[rule.bracket(trial_id)] += 1
    # Hyperband's shares eta**s / (s+1) for s = 3, 2, 1, 0: 27/4, 9/3, 3/2, 1/1 -> 6.75 : 3 : 1.5 : 1.
    shares = [6.75, 3, 1.5, 1]
    for count, share in zip(counts, shares, strict=True):
        assert count == pytest.approx(8100 * share / sum(shares), rel=0.02)
    assert Hyperband(1, 27, 3, brackets=2).bracket_rungs == [(1, 3, 9), (3, 9)]


def test_hyperband_brackets_judge_separately():
    rule = Hyperband(1, 27, 3, brackets=2)
    first = [t for t in range(50) if rule.bracket(t) == 0][:2]
    second = [t for t in range(50) if rule.bracket(t) == 1][:2]
    assert rule.handle(Report(first[0], 0, 1.0)) == Decision(False, 1)
    assert rule.handle(Report(first[1], 0, 2.0)) == Decision(True, 1)
    assert rule.handle(Report(second[0], 0, 9.0)) is None  # its first rung is 3 epochs
    assert rule.handle(Report(second[0], 2, 9.0)) == Decision(False, 3)  # alone in its bracket's rung 3
    assert rule.handle(Report(second[1], 2, 9.5)) == Decision(True, 3)


def test_median_compares_the_best_so_far_with_the_others_median_at_the_same_epoch():
    rule = Median(2, 10)
    assert rule.rungs_for(0) == tuple(range(2, 10))
    for trial_id, value in enumerate([1.0, 2.0, 3.0, 4.0]):
        assert rule.handle(Report(trial_id, 0, value)) is None  # before min_epochs
        assert rule.handle(Report(trial_id, 1, value)) == Decision(False, 2)  # too few others yet
    # Others at 2 epochs: 1, 2, 3, 4 -> median 2.5.
    assert rule.handle(Report(4, 0, 2.4)) is None
    assert rule.handle(Report(4, 1, 2.6)) == Decision(False, 2)  # best so far 2.4 (at epoch 0) <= 2.5
    assert rule.handle(Report(5, 1, 2.6)) == Decision(True, 2)   # others 1, 2, 2.4, 3, 4 -> median 2.4
    assert MEDIAN_MIN_OTHERS == 4


def test_replay_rebuilds_the_rungs_and_none_stops_nothing():
    reports = [Report(0, 0, 5.0), Report(1, 0, 6.0), Report(0, 2, 4.0)]
    rule = Asha(1, 27, 3)
    rule.replay(reports)
    assert rule.stopped_at == {1: 1}
    assert rule.handle(Report(2, 0, 5.5)) == Decision(True, 1)  # n=3: 5.0 is better
    assert NoStopping(1, 27).handle(Report(0, 0, 1.0)) is None
    assert isinstance(make_rule("hyperband", 1, 27, 3, True, 2), Hyperband)
    assert isinstance(make_rule("median", 1, 27, 3, True), Median)


def test_levels_follow_the_ladder_with_nan_below_a_brackets_first_rung():
    rule = Hyperband(1, 27, 3, brackets=2)
    later = next(t for t in range(50) if rule.bracket(t) == 1)
    rule.handle(Report(later, 2, 0.7))
    rule.handle(Report(later, 8, 0.5))
    levels = rule.levels(later)
    assert len(levels) == 3 and math.isnan(levels[0]) and levels[1:] == (0.7, 0.5)
