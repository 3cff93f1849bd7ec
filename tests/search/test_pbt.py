"""The PBT decisions by hand: quantiles, ties, direction, every parameter type, bounds, lineage, retention, failures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpc_hpo.search.pbt import (
    MAX_FAILURES,
    Finished,
    PbtSettings,
    Population,
    _Ranking,
    explore,
    perturb_value,
    quantile_size,
)
from hpc_hpo.search.space import parse_space

SPACE = parse_space({
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "units": {"type": "int", "low": 16, "high": 256},
    "act": {"type": "categorical", "choices": ["relu", "tanh", "elu"]},
    "epochs": {"type": "fixed", "value": 40},
})


def test_the_quantile_is_at_most_half_and_at_least_one_of_two():
    assert [quantile_size(n, 0.25) for n in (0, 1, 2, 3, 4, 8, 9, 16)] == [0, 0, 1, 1, 1, 2, 3, 4]
    assert [quantile_size(n, 0.5) for n in (1, 2, 3, 7)] == [0, 1, 1, 3]


def test_a_ranking_sorts_in_the_experiments_direction_ties_by_member_non_finite_last():
    low = _Ranking(minimize=True)
    for member, score in [(0, 0.5), (1, 0.1), (2, math.nan), (3, 0.1), (4, 0.9)]:
        low.put(member, score)
    assert [key[2] for key in low.keys] == [1, 3, 0, 4, 2]
    low.put(4, 0.0)  # a member has one place: a new score moves it
    assert [key[2] for key in low.keys] == [4, 1, 3, 0, 2] and low.position(0) == 3
    high = _Ranking(minimize=False)
    for member, score in [(0, 0.5), (1, 0.1), (2, math.inf), (3, 0.9)]:
        high.put(member, score)
    assert [key[2] for key in high.keys] == [3, 0, 1, 2]
    high.remove(3)
    assert [key[2] for key in high.keys] == [0, 1, 2] and 3 not in high.key_of


def test_in_sync_mode_the_bottom_quarter_copies_the_top_quarter_and_ties_stay():
    population = Population(X_SPACE, settings(population=8, mode="sync"), True, np.random.default_rng(0))
    scores = {0: 0.5, 1: 0.1, 2: 0.9, 3: 0.3, 4: 0.7, 5: 0.2, 6: 0.8, 7: 0.4}
    generation(population, 0, scores)
    second = generation(population, 8, scores)
    copied = {m: s.parent for m, s in second.items() if s.parent != m}
    assert sorted(copied) == [2, 6] and set(copied.values()) <= {1, 5}  # worst two copy the best two
    maximize = Population(X_SPACE, settings(population=8, mode="sync"), False, np.random.default_rng(0))
    generation(maximize, 0, scores)
    second = generation(maximize, 8, scores)
    assert sorted(m for m, s in second.items() if s.parent != m) == [1, 5]
    tied = Population(X_SPACE, settings(population=4, mode="sync"), True, np.random.default_rng(0))
    generation(tied, 0, {m: 1.0 for m in range(4)})
    assert all(s.parent == m for m, s in generation(tied, 4, {m: 1.0 for m in range(4)}).items())


def test_perturb_is_log_aware_clipped_rounded_and_moves_categoricals_to_a_neighbour():
    rng = np.random.default_rng(0)
    lr, dropout, units, act = (SPACE[n] for n in ("lr", "dropout", "units", "act"))
    assert perturb_value(lr, 0.01, 1.2, rng) == pytest.approx(0.012)
    assert perturb_value(lr, 0.09, 1.2, rng) == 0.1  # clipped to the upper bound
    assert perturb_value(lr, 1.1e-4, 0.8, rng) == 1e-4  # and to the lower
    assert perturb_value(dropout, 0.0, 1.2, rng) == pytest.approx(0.1)  # at 0: moves by (f - 1) of the range
    assert perturb_value(dropout, 0.0, 0.8, rng) == 0.0
    assert perturb_value(units, 100, 1.2, rng) == 120
    assert perturb_value(units, 17, 1.02, rng) == 18  # rounding would not move it: one step
    assert perturb_value(units, 256, 1.2, rng) == 256
    assert perturb_value(act, "tanh", 1.2, rng) == "elu"
    assert perturb_value(act, "tanh", 0.8, rng) == "relu"
    assert perturb_value(act, "elu", 1.2, rng) == "tanh"  # inward at the end
    assert perturb_value(SPACE["epochs"], 40, 1.2, rng) == 40


def test_explore_resamples_with_its_probability_keeps_fixed_values_and_stays_in_bounds():
    rng = np.random.default_rng(1)
    base = {"lr": 0.01, "dropout": 0.2, "units": 64, "act": "relu", "epochs": 40}
    changed = {name: 0 for name in base}
    for _ in range(2000):
        new = explore(SPACE, base, rng, 0.25, (0.8, 1.2))
        SPACE.check_point(new, "explored")  # every value valid, fixed ones unchanged
        for name in base:
            changed[name] += new[name] != base[name]
    assert changed["epochs"] == 0
    # lr always moves (perturbed or resampled); a perturbed value is exactly base * 0.8 or * 1.2.
    assert changed["lr"] == 2000
    perturbed = [explore(SPACE, base, rng, 0.0, (0.8, 1.2))["lr"] for _ in range(50)]
    assert set(np.round(perturbed, 12)) == {0.008, 0.012}
    resampled = [explore(SPACE, base, rng, 1.0, (0.8, 1.2))["lr"] for _ in range(200)]
    assert len(set(resampled)) > 150 and min(resampled) >= 1e-4 and max(resampled) <= 1e-1


def settings(**overrides) -> PbtSettings:
    return PbtSettings(**{"population": 4, "interval": 2, "epochs": 6, **overrides})


def run_segment(population: Population, trial_id: int, score: float | None, bad: bool = False):
    """Hand out the next segment as ``trial_id`` and finish it with ``score``."""
    segment = population.next_segment()
    assert segment is not None
    population.start(segment, trial_id)
    population.finish(Finished(trial_id, segment.member, segment.parent, segment.start_epoch, segment.end_epoch,
                               segment.params, score, bad))
    return segment


def generation(population: Population, first_id: int, scores: dict[int, float | None], bad=()) -> dict:
    """Start every ready segment (ids from ``first_id``), then finish them in member order with ``scores``."""
    started = {}
    while (segment := population.next_segment()) is not None:
        population.start(segment, first_id + len(started))
        started[segment.member] = (first_id + len(started), segment)
    for member in sorted(started):
        trial_id, segment = started[member]
        population.finish(Finished(trial_id, member, segment.parent, segment.start_epoch, segment.end_epoch,
                                   segment.params, scores[member], member in bad))
    return {member: segment for member, (_, segment) in started.items()}


X_SPACE = parse_space({"x": {"type": "float", "low": 0.0, "high": 1.0}})


def test_the_bottom_member_copies_a_top_member_starts_at_its_epoch_and_explores_from_its_values():
    population = Population(X_SPACE, settings(resample_probability=0.0), minimize=True, rng=np.random.default_rng(0))
    first = generation(population, 0, {0: 0.1, 1: 0.1, 2: 0.1, 3: 0.9})
    assert all(s.parent == -1 and s.start_epoch == 0 and s.end_epoch == 2 for s in first.values())
    # Members 1 and 2 tie with the top (member 0, first of the tie): they go on. Member 3 is the bottom quarter.
    second = generation(population, 4, {0: 0.1, 1: 0.2, 2: 0.3, 3: 0.05})
    assert second[3].parent == 0 and second[3].start_epoch == 2
    assert second[3].params["x"] in (pytest.approx(first[0].params["x"] * 0.8),
                                     pytest.approx(first[0].params["x"] * 1.2))
    for member in (0, 1, 2):
        assert second[member].parent == member and second[member].params == first[member].params
    assert population.exploits == 1


def test_maximize_exploits_the_lowest_score():
    population = Population(X_SPACE, settings(), minimize=False, rng=np.random.default_rng(0))
    generation(population, 0, {0: 0.9, 1: 0.9, 2: 0.9, 3: 0.1})
    second = generation(population, 4, {m: 0.5 for m in range(4)})
    assert second[3].parent == 0 and all(second[m].parent == m for m in (0, 1, 2))


def test_a_whole_async_run_keeps_the_lineage_and_finishes_every_member_at_the_last_epoch():
    population = Population(X_SPACE, settings(population=6, epochs=20, interval=3), True, np.random.default_rng(3))
    rng, ends, trial, running = np.random.default_rng(4), {}, 0, []
    while not population.finished:
        while (segment := population.next_segment()) is not None:
            population.start(segment, trial)
            running.append((trial, segment))
            trial += 1
        i = int(rng.integers(len(running)))  # segments end in any order
        trial_id, segment = running.pop(i)
        assert segment.parent == -1 or ends[segment.parent] == segment.start_epoch
        assert segment.end_epoch == min(20, segment.start_epoch + 3)
        ends[trial_id] = segment.end_epoch
        score = (segment.params["x"] - 0.3) ** 2 / (1 + segment.end_epoch)
        population.finish(Finished(trial_id, segment.member, segment.parent, segment.start_epoch,
                                   segment.end_epoch, segment.params, score))
    assert not running and population.exploits > 0
    assert all(m.epoch == 20 for m in population.members)
    assert population.started == trial and population.remaining() == 0


def test_sync_mode_waits_for_the_generation_and_ranks_everyone_at_one_epoch():
    population = Population(X_SPACE, settings(mode="sync"), True, np.random.default_rng(0))
    segments = []
    for t in range(4):
        segments.append(population.next_segment())
        population.start(segments[-1], t)
    assert population.next_segment() is None
    for t, segment in enumerate(segments[:3]):
        population.finish(Finished(t, segment.member, -1, 0, 2, segment.params, [0.4, 0.1, 0.2][t]))
        assert population.next_segment() is None  # member 3 still runs: nobody starts the next generation
    population.finish(Finished(3, 3, -1, 0, 2, segments[3].params, 0.3))
    following = []
    while (segment := population.next_segment()) is not None:
        population.start(segment, 4 + len(following))
        following.append(segment)
    assert sorted(s.member for s in following) == [0, 1, 2, 3] and {s.start_epoch for s in following} == {2}
    assert {s.member: s.parent for s in following} == {0: 1, 1: 1, 2: 2, 3: 3}  # the worst (0.4) copies the best


def test_retention_keeps_two_per_member_the_best_and_every_checkpoint_still_to_be_restored():
    population = Population(X_SPACE, settings(population=2, epochs=12, quantile=0.5), True, np.random.default_rng(0))
    removed: list[int] = []
    trial = 0
    while not population.finished:
        started = generation(population, trial, {0: 0.5, 1: 0.4})
        if trial == 0:
            assert population.members[0].checkpoints[0].trial_id == 0
        trial += len(started)
        keep = population.keep()
        removed += population.removable()
        assert not set(removed) & keep
        for member in population.members:
            assert {c.trial_id for c in member.checkpoints[-2:]} <= keep
        assert {m.next.parent for m in population.members if m.next is not None} - {-1} <= keep
        assert len(keep) <= 2 * 2 + 1
        assert trial < 40
    assert len(removed) >= 4 and not set(removed) & population.keep()
    best = population._best
    assert best.trial_id in population.keep() and best.score == 0.4


def test_a_failed_segment_runs_again_from_the_same_checkpoint_and_a_member_is_given_up_after_three():
    population = Population(X_SPACE, settings(population=2), True, np.random.default_rng(0))
    run_segment(population, 0, 0.5)
    first = run_segment(population, 1, None)  # member 1 fails its first segment
    again = population.next_segment()
    assert again.member == 1 and again.parent == -1 and again.params == first.params
    for t in range(2, 2 + MAX_FAILURES - 1):
        assert run_segment(population, t, None).member == 1
    assert population.members[1].gave_up and population.next_segment().member == 0


def test_an_unusable_checkpoint_is_never_used_again_and_the_member_goes_back_to_its_last_good_one():
    population = Population(X_SPACE, settings(population=2, epochs=8, quantile=0.5), True, np.random.default_rng(0))
    generation(population, 0, {0: 0.5, 1: 0.5})  # checkpoints 0 and 1 at epoch 2 (a tie: nobody copies)
    second = generation(population, 2, {0: 0.4, 1: 0.4})  # checkpoints 2 and 3 at epoch 4
    assert second[0].parent == 0 and second[1].parent == 1
    population.members[0].params = {"x": 0.123}  # as if it had explored since
    third = generation(population, 4, {0: None, 1: 0.3}, bad={0})  # member 0 cannot restore checkpoint 2
    assert third[0].parent == 2 and 2 in population.bad
    back = population.next_segment()
    assert back.member == 0 and back.parent == 0 and back.start_epoch == 2 and back.params == second[0].params
    assert 2 not in population.keep() and 2 in population.removable()
    # A member with no good checkpoint left starts afresh, and says so.
    fresh = Population(X_SPACE, settings(population=2), True, np.random.default_rng(0))
    generation(fresh, 0, {0: 0.5, 1: 0.5})
    generation(fresh, 2, {0: None, 1: 0.4}, bad={0})
    segment = fresh.next_segment()
    assert segment.member == 0 and segment.parent == -1 and segment.start_epoch == 0
    assert "afresh" in fresh.notes[0]


def test_restore_from_rows_rebuilds_members_and_decides_anew():
    def make():
        return Population(X_SPACE, settings(population=3, epochs=6), True, np.random.default_rng(7))

    population = make()
    rows = []
    for t, score in enumerate([0.3, 0.2, 0.1]):
        segment = run_segment(population, t, score)
        rows.append(Finished(t, segment.member, segment.parent, segment.start_epoch, segment.end_epoch,
                             segment.params, score))
    running = population.next_segment()
    population.start(running, 3)
    resumed = make()
    resumed.restore(rows, [(3, running)])
    assert resumed.members[running.member].running == 3
    assert [m.epoch for m in resumed.members] == [2, 2, 2]
    assert [m.params for m in resumed.members] == [m.params for m in population.members]
    waiting = resumed.next_segment()
    assert waiting is not None and waiting.start_epoch == 2 and waiting.member != running.member
    assert running.parent in resumed.keep()


def test_pb2_chooses_where_the_score_improved_most_at_this_point_of_training():
    from hpc_hpo.search.gp.pb2 import pb2_choose

    space = parse_space({"lr": {"type": "float", "low": 0.0, "high": 1.0},
                         "act": {"type": "categorical", "choices": ["relu", "tanh"]}})
    rng = np.random.default_rng(0)
    history = []
    for _ in range(120):  # the best lr falls from 0.8 at epoch 0 to 0.2 at epoch 20
        t, lr = int(rng.integers(1, 21)), float(rng.random())
        history.append((t, {"lr": lr, "act": "relu"}, -((lr - (0.8 - 0.03 * t)) ** 2)))
    late = pb2_choose(space, {"lr": 0.9, "act": "tanh"}, 20, history, [], minimize=False, rng=rng)
    early = pb2_choose(space, {"lr": 0.1, "act": "tanh"}, 1, history, [], minimize=False, rng=rng)
    assert abs(late["lr"] - 0.2) < 0.15 and abs(early["lr"] - 0.77) < 0.15, (late, early)
    assert late["act"] == "tanh"  # categoricals keep the copied value
    # Minimizing a loss: the change is negated, so the same history read as losses points the other way.
    worst = pb2_choose(space, {"lr": 0.5, "act": "relu"}, 20, history, [], minimize=True, rng=rng)
    assert abs(worst["lr"] - 0.2) > 0.3
    # Too little to learn from: anywhere in the bounds.
    few = pb2_choose(space, {"lr": 0.5, "act": "relu"}, 3, history[:2], [], minimize=False, rng=rng)
    assert 0.0 <= few["lr"] <= 1.0


def test_a_member_just_behind_is_ranked_where_its_last_two_scores_point():
    population = Population(X_SPACE, settings(population=2, epochs=10, quantile=0.5), True, np.random.default_rng(0))
    ids = iter(range(100))

    def start(member: int) -> tuple[int, object]:
        segment = population.next_segment()
        assert segment.member == member
        trial_id = next(ids)
        population.start(segment, trial_id)
        return trial_id, segment

    def finish(started, score):
        trial_id, s = started
        population.finish(Finished(trial_id, s.member, s.parent, s.start_epoch, s.end_epoch, s.params, score))

    a, b = start(0), start(1)
    finish(a, 0.6), finish(b, 0.5)  # epoch 2
    a, b = start(0), start(1)
    finish(b, 0.3), finish(a, 0.25)  # epoch 4: member 0 is ahead of member 1 (0.25 < 0.3): both go on
    assert population.exploits == 0
    a, b = start(0), start(1)
    # Member 0 reaches epoch 6 first with 0.2; member 1, still at 4, heads for 0.1 there (0.5 -> 0.3 -> 0.1):
    # member 0 is the bottom and copies member 1's checkpoint of epoch 4, one interval back.
    finish(a, 0.2)
    nxt = population.members[0].next
    assert population.exploits == 1 and nxt.parent == 3 and nxt.start_epoch == 4
