"""The worker's Bayesian step: encoding of mixed spaces, and what a suggestion promises."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpc_hpo.search.bayes_options import DEFAULTS as DEFAULT_OPTIONS
from hpc_hpo.search.gp import warping
from hpc_hpo.search.gp.acquisition import acquisition
from hpc_hpo.search.gp.encoding import Encoding
from hpc_hpo.search.gp.model import GaussianProcess
from hpc_hpo.search.gp.suggester import KEEP_POSTERIOR_FROM, KEPT_NEW_ROWS, MIN_POINTS, BayesSuggester
from hpc_hpo.search.gp.warping import transform
from hpc_hpo.search.sampling import sobol_engine
from hpc_hpo.search.space import parse_space

MIXED = parse_space({
    "lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
    "units": {"type": "int", "low": 16, "high": 512, "log": True},
    "layers": {"type": "int", "low": 1, "high": 4},
    "act": {"type": "categorical", "choices": ["relu", "tanh", "elu"]},
    "bs": {"type": "fixed", "value": 64},
})
LINE = parse_space({"x": {"type": "float", "low": 0.0, "high": 1.0}})


def mixed_loss(p):
    return ((math.log10(p["lr"]) + 3) ** 2 + (math.log2(p["units"]) - 7) ** 2 / 4 + (p["layers"] - 2) ** 2
            + {"relu": 0.0, "tanh": 1.0, "elu": 0.5}[p["act"]])


def run(suggester, f, n, pending=()):
    points = []
    for _ in range(n):
        p = suggester.suggest(list(pending))
        suggester.update([(p, f(p))])
        points.append(p)
    return points


def test_encoding_of_a_mixed_space():
    enc = Encoding(MIXED)
    assert enc.dim == 1 + 1 + 1 + 3  # lr, units, layers, one-hot act; bs is fixed
    assert enc.continuous.tolist() == [True, True, True, False, False, False]
    points = MIXED.sample(np.random.default_rng(0), 50)
    X = enc.encode(points)
    assert X.shape == (50, 6) and np.all((X >= 0) & (X <= 1))
    assert np.all(X[:, 3:].sum(axis=1) == 1)  # exactly one choice
    assert enc.decode(X) == points
    # Any vector snaps to a valid point: ints to their bin, the largest one-hot column wins.
    snapped = enc.decode(np.array([[0.5, 0.51, 0.4, 0.2, 0.7, 0.1]]))[0]
    assert type(snapped["units"]) is int and snapped["act"] == "tanh" and snapped["bs"] == 64
    assert np.allclose(enc.project(enc.encode([snapped])), enc.encode([snapped]))


def test_explores_until_enough_points_then_uses_the_gp():
    s = BayesSuggester(LINE, True, np.random.default_rng(0))
    early = [s.suggest([]) for _ in range(3)]
    assert all(0 <= p["x"] <= 1 for p in early)
    s.update([({"x": x}, (x - 0.3) ** 2) for x in (0.0, 0.5, 0.9)][:MIN_POINTS])
    points = run(s, lambda p: (p["x"] - 0.3) ** 2, 12)
    assert abs(points[-1]["x"] - 0.3) < 0.02  # converges on the minimum of a parabola


def test_never_proposes_an_observed_or_pending_point_in_a_discrete_space():
    space = parse_space({"a": {"type": "int", "low": 1, "high": 5}, "b": {"type": "categorical", "choices": ["p", "q"]}})
    s = BayesSuggester(space, True, np.random.default_rng(1))
    pending = [{"a": 3, "b": "p"}]
    points = run(s, lambda p: (p["a"] - 3) ** 2 + (p["b"] == "q"), 9, pending=pending)
    keys = [(p["a"], p["b"]) for p in points]
    assert len(set(keys)) == 9 and (3, "p") not in keys  # 9 of the 10 points, the pending one never
    # Every point is now observed or pending: the space is exhausted, and a valid point still comes back.
    again = s.suggest(pending)
    assert space.check_point(again, "again") == again


def test_workers_choosing_at_once_take_their_slots_point_apart_from_the_better_ones():
    """Three workers choose at the same moment from the same history without knowing each other's points: slot 0
    takes the acquisition's best point, slots 1 and 2 the next ones at least 1% of the diagonal from the better."""
    history = [({"x": x, "y": y}, (x - 0.3) ** 2 + (y - 0.6) ** 2) for x, y in
               [(0.1, 0.1), (0.9, 0.2), (0.5, 0.5), (0.2, 0.8), (0.7, 0.9), (0.35, 0.55), (0.6, 0.3)]]
    plane = parse_space({"x": {"type": "float", "low": 0.0, "high": 1.0}, "y": {"type": "float", "low": 0.0,
                                                                                "high": 1.0}})
    chosen = []
    for slot in range(3):
        s = BayesSuggester(plane, True, np.random.default_rng(4))  # identical replicas: the same candidates
        s.update(history)
        chosen.append(s.suggest([], slot=slot))
    s = BayesSuggester(plane, True, np.random.default_rng(4))
    s.update(history)
    assert s.suggest([]) == chosen[0]  # slot 0 is the step as it always was
    points = np.array([[p["x"], p["y"]] for p in chosen])
    gaps = [np.linalg.norm(points[i] - points[j]) / np.sqrt(2) for i in range(3) for j in range(i)]
    assert min(gaps) >= 0.01, chosen
    assert all(np.linalg.norm(p - [0.3, 0.6]) < 0.25 for p in points), chosen  # all still near the best region


def test_pending_points_keep_suggestions_apart():
    s = BayesSuggester(LINE, True, np.random.default_rng(2))
    s.update([({"x": x}, (x - 0.3) ** 2) for x in (0.0, 0.2, 0.45, 0.7, 1.0)])
    first = s.suggest([])
    second = s.suggest([first])  # as a second worker would, with the first still running
    third = s.suggest([first, second])
    xs = sorted(p["x"] for p in (first, second, third))
    assert min(np.diff(xs)) > 0.01  # no near-duplicates: more than 1% of the range apart


def test_failed_trials_steer_the_search_away():
    def f(p):
        return None if p["x"] > 0.6 else -p["x"]  # better and better towards 0.6, then it crashes

    s = BayesSuggester(LINE, True, np.random.default_rng(3))
    s.update([({"x": x}, f({"x": x})) for x in (0.1, 0.3, 0.5, 0.7, 0.9)])
    points = run(s, f, 15)
    crashed = sum(p["x"] > 0.6 for p in points[5:])
    assert crashed <= 2  # it learns where trials fail instead of proposing them again
    assert max(p["x"] for p in points if p["x"] <= 0.6) > 0.55


def test_maximize():
    s = BayesSuggester(LINE, False, np.random.default_rng(4))
    s.update([({"x": x}, -((x - 0.7) ** 2)) for x in (0.0, 0.3, 0.5, 1.0)])
    points = run(s, lambda p: -((p["x"] - 0.7) ** 2), 10)
    assert abs(points[-1]["x"] - 0.7) < 0.02


def test_mixed_space_suggestions_are_valid_and_improve():
    s = BayesSuggester(MIXED, True, np.random.default_rng(5))
    start = MIXED.sample(np.random.default_rng(6), 8)
    s.update([(p, mixed_loss(p)) for p in start])
    points = run(s, mixed_loss, 25)
    for p in points:
        assert MIXED.check_point(p, "p") == p
    assert min(map(mixed_loss, points)) < min(map(mixed_loss, start)) / 4


def test_same_seed_same_suggestions():
    def suggestions(seed):
        s = BayesSuggester(MIXED, True, np.random.default_rng(seed))
        s.update([(p, mixed_loss(p)) for p in MIXED.sample(np.random.default_rng(0), 6)])
        return run(s, mixed_loss, 5)

    assert suggestions(7) == suggestions(7)
    assert suggestions(7) != suggestions(8)


def test_repeats_are_averaged():
    s = BayesSuggester(LINE, True, np.random.default_rng(0))
    s.update([({"x": 0.5}, 1.0), ({"x": 0.5}, 3.0), ({"x": 0.5}, None), ({"x": 0.1}, 0.0)])
    point = s._points[(0.5,)]
    assert point.successes == 2 and point.failures == 1 and point.total / point.successes == 2.0
    assert s.observations == 4


@pytest.mark.parametrize("n", [400, 2000])
def test_large_histories_use_subsets_and_stay_valid(n):
    s = BayesSuggester(MIXED, True, np.random.default_rng(9))
    points = MIXED.sample(np.random.default_rng(10), n)
    s.update([(p, mixed_loss(p)) for p in points])
    p = s.suggest(MIXED.sample(np.random.default_rng(11), 7))
    assert MIXED.check_point(p, "p") == p and MIXED.key(p) not in {MIXED.key(q) for q in points}


def test_between_fits_the_posterior_extends_the_last_one_and_equals_the_posterior_built_anew():
    s = BayesSuggester(MIXED, True, np.random.default_rng(3))
    points = MIXED.sample(np.random.default_rng(4), 160)  # past ALWAYS_REFIT_BELOW: fits every few steps
    s.update([(p, mixed_loss(p)) for p in points[:150]])
    s.suggest([])
    query = s.encoding.encode(MIXED.sample(np.random.default_rng(6), 50))
    extended_steps = 0
    for p in points[150:]:
        last = s._base
        s.update([(p, mixed_loss(p))])
        s.suggest(MIXED.sample(np.random.default_rng(5), 3))
        gp = s._base
        if last is not None and gp.theta_ is last.theta_:  # no fit between: the last factor, one point added
            extended_steps += 1
            assert len(gp.X_) == len(last.X_) + 1 and np.array_equal(gp.L_[:len(last.X_), :len(last.X_)], last.L_)
        anew = GaussianProcess(gp.X_, gp.y_, gp.theta_)
        assert np.allclose(gp.L_, anew.L_, atol=1e-9)
        for got, want in zip(gp.predict(query), anew.predict(query), strict=True):  # values of order 1
            assert np.allclose(got, want, rtol=0, atol=1e-8)
    assert extended_steps >= 5


def test_vectorised_sampling_agrees_with_the_parameter_dicts():
    enc = Encoding(MIXED)
    U = np.random.default_rng(3).random((500, len(enc.params)))
    assert np.allclose(enc.sample(U), enc.encode(MIXED.from_unit(U)))
    X = np.random.default_rng(4).random((200, enc.dim))
    assert np.allclose(enc.project(X), enc.encode(enc.decode(X)))


def test_with_early_stopping_the_gp_models_one_rung_and_imputes_the_trials_stopped_below_it():
    import numpy as np

    from hpc_hpo.search.gp.suggester import BayesSuggester
    from hpc_hpo.search.space import parse_space

    space = parse_space({"x": {"type": "float", "low": 0.0, "high": 1.0}})
    suggester = BayesSuggester(space, minimize=True, rng=np.random.default_rng(0))
    # Rung ladder (1, 3); the final value comes last for trials that ran to the end.
    suggester.update([({"x": 0.1}, None, (0.9,)),             # stopped at rung 1
                      ({"x": 0.2}, None, (0.5, 0.4)),         # stopped at rung 3
                      ({"x": 0.3}, 0.1, (0.4, 0.3, 0.1)),     # ran to the end
                      ({"x": 0.4}, None, (0.45, 0.35)),
                      ({"x": 0.5}, None, (0.6, 0.5))])
    values = suggester._values(list(suggester._points.values()))
    # Rung 3 (level 1) is the highest rung that max(MIN_POINTS, dimensions + 1) = 3 points reached (4 did).
    assert values.tolist() == [0.5, 0.4, 0.3, 0.35, 0.5]
    params = suggester.suggest([])
    assert 0.0 <= params["x"] <= 1.0 and suggester.observations == 5


HARTMANN6 = parse_space({f"x{i}": {"type": "float", "low": 0.0, "high": 1.0} for i in range(6)})
_H6_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8],
                  [17, 8, 0.05, 10, 0.1, 14]])
_H6_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                         [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]])


def hartmann6(p):
    x = np.array([p[f"x{i}"] for i in range(6)])
    return float(-np.sum(np.array([1.0, 1.2, 3.0, 3.2]) * np.exp(-np.sum(_H6_A * (x - _H6_P) ** 2, axis=1))))


def unit_distance(space, a, b) -> float:
    ua, ub = space.to_unit([a, b])
    return float(np.linalg.norm(ua - ub) / math.sqrt(space.dim))


def test_far_from_every_observation_the_model_expects_the_worst_so_the_steps_leave_the_corners_alone():
    """Hartmann6's optimum lies inside the cube. With the average as the prior mean, expected improvement found the
    unexplored corners most promising: of these 120 steps 22 had three or more coordinates on a bound, each scoring
    about as badly as any point can. With the worst value observed as the prior mean (``transform``), none."""
    on_bounds = 0
    for seed in range(4):
        s = BayesSuggester(HARTMANN6, True, np.random.default_rng(seed))
        s.update([(p, hartmann6(p)) for p in HARTMANN6.sample(np.random.default_rng(100 + seed), 10)])
        X = s.encoding.to_unit(s.encoding.encode(run(s, hartmann6, 30)))
        on_bounds += int((((X <= 1e-9) | (X >= 1 - 1e-9)).sum(axis=1) >= 3).sum())
    assert on_bounds <= 2


HARTMANN6_MINIMUM = -3.32237


def one_worker_on_hartmann6(seed: int, evaluations: int) -> float:
    """Regret after ``evaluations``: ten scrambled Sobol points (the design the search starts from), then one
    Bayesian step per result, as one worker takes them."""
    s = BayesSuggester(HARTMANN6, True, np.random.default_rng(seed))
    design = sobol_engine(6, np.random.default_rng([seed, 10])).random(16)[:10]
    values = []
    for p in s.encoding.decode(design):
        values.append(hartmann6(p))
        s.update([(p, values[-1])])
    values += [hartmann6(p) for p in run(s, hartmann6, evaluations - len(design))]
    return min(values) - HARTMANN6_MINIMUM


def test_with_the_worst_as_prior_mean_hartmann6_gets_nearer_its_optimum_by_50_evaluations_on_nearly_every_seed(
        monkeypatch):
    """A statistical test on fixed seeds, each seed run with today's prior mean (the worst value observed) and
    with the old one (the average), paired. Hartmann6 has a second basin 0.119 above the optimum; the worst as
    prior mean does not leave it more often, but gets further down whichever basin it is in: lower regret at 50
    evaluations on all 12 seeds here (20 of 20 over seeds 0-19, 19 of 20 with another set of designs; the
    40-seed figures are in docs/performance.md). By chance alone, 10 of 12 has odds of 2%."""
    seeds, evaluations = range(12), 50
    regret = [one_worker_on_hartmann6(seed, evaluations) for seed in seeds]
    monkeypatch.setattr(warping, "pessimistic", lambda y: y)  # the average as the prior mean, as before
    regret_average_prior = [one_worker_on_hartmann6(seed, evaluations) for seed in seeds]
    nearer = sum(a < b for a, b in zip(regret, regret_average_prior, strict=True))
    assert nearer >= 10, (regret, regret_average_prior)


def prepared_best(s: BayesSuggester) -> dict:
    [best] = s.encoding.decode(s._prepared.candidates[:1])  # the look-ahead's first choice
    return best


@pytest.mark.parametrize("seed", range(4))
def test_the_look_ahead_treats_the_trial_it_runs_beside_as_running(seed):
    """While its trial runs, the worker prepares its next step: never at (or next to) that trial's own point."""
    s = BayesSuggester(HARTMANN6, True, np.random.default_rng(seed))
    s.update([(p, hartmann6(p)) for p in HARTMANN6.sample(np.random.default_rng([seed, 9]), 20)])
    running = s.suggest([])
    s.prepare([running])
    assert unit_distance(HARTMANN6, prepared_best(s), running) >= 0.01


def test_a_look_ahead_that_forgot_its_running_trial_would_choose_it_again():
    """What the test above guards against, where the acquisition has one maximum: the same point twice."""
    def replica():
        s = BayesSuggester(LINE, True, np.random.default_rng(2))
        s.update([({"x": x}, (x - 0.3) ** 2) for x in (0.0, 0.2, 0.45, 0.7, 1.0)])
        return s

    s = replica()
    running = s.suggest([])
    s.prepare([])
    assert abs(prepared_best(s)["x"] - running["x"]) < 0.01
    s = replica()
    s.suggest([])
    s.prepare([running])
    assert abs(prepared_best(s)["x"] - running["x"]) >= 0.01


def test_a_prepared_step_is_used_once_for_its_options_and_folds_in_what_finished_meanwhile():
    s = BayesSuggester(HARTMANN6, True, np.random.default_rng(4))
    s.update([(p, hartmann6(p)) for p in HARTMANN6.sample(np.random.default_rng(5), 20)])
    mine = s.suggest([])
    others = HARTMANN6.sample(np.random.default_rng(6), 3)  # running elsewhere
    s.prepare([*others, mine])
    assert s._prepared is not None
    s.update([(mine, hartmann6(mine)), (others[0], hartmann6(others[0]))])  # finished meanwhile
    started = HARTMANN6.sample(np.random.default_rng(7), 1)[0]  # started meanwhile
    nxt = s.suggest([*others[1:], started])
    assert s._prepared is None  # used up: the step after it is whole again unless prepared anew
    assert HARTMANN6.key(nxt) not in {HARTMANN6.key(p) for p in (mine, others[0])}
    assert all(unit_distance(HARTMANN6, nxt, p) >= 0.01 for p in (*others[1:], started))
    s.prepare([nxt], {"acquisition": "ucb"})
    s.suggest([nxt], {"acquisition": "ei"})  # another phase's options: the prepared step is dropped, not used
    assert s._prepared is None


def test_past_a_thousand_points_a_prepared_step_keeps_its_posterior_and_folds_in_exactly():
    """What thousands of workers need (a fold-in of milliseconds, not a whole step): the prepared candidates scored
    again as a GP built anew with the same hyperparameters would score them: the trials that were running at their
    values, those still running believed at the mean over the modelled points, results elsewhere as new points."""
    s = BayesSuggester(HARTMANN6, True, np.random.default_rng(1))
    s.update([(p, hartmann6(p)) for p in HARTMANN6.sample(np.random.default_rng(2), KEEP_POSTERIOR_FROM)])
    running = HARTMANN6.sample(np.random.default_rng(3), 40)
    s.suggest(running)  # the fit, as the steps before this one did
    s.prepare(running)
    kept = s._prepared.kept
    assert kept is not None and len(kept.fantasies) == 40
    finished, still = running[:6], running[6:]
    elsewhere = HARTMANN6.sample(np.random.default_rng(5), 3)  # trials older than the pending points it was told
    s.update([(p, hartmann6(p)) for p in (*finished, *elsewhere)])
    ranked, scores = s._fold_into_kept_posterior(list(s._points.values()), s._prepared, DEFAULT_OPTIONS)

    y = dict(zip(s._points, transform(s._values(list(s._points.values()))), strict=True))
    modelled = s.encoding.encode([s._points[key].params for key in kept.modelled])
    y_modelled = np.array([y[key] for key in kept.modelled])
    beliefs = GaussianProcess(modelled, y_modelled, s._theta).mean(s.encoding.encode(still))
    anew = GaussianProcess(np.vstack([modelled, s.encoding.encode([*running, *elsewhere])]),
                           np.concatenate([y_modelled, [y[HARTMANN6.key(p)] for p in finished], beliefs,
                                           [y[HARTMANN6.key(p)] for p in elsewhere]]), s._theta)
    mean, std = anew.predict(ranked)
    expected = acquisition(DEFAULT_OPTIONS["acquisition"], mean, std, min(min(y.values()), beliefs.min()),
                           DEFAULT_OPTIONS["xi"], DEFAULT_OPTIONS["kappa"])[0]
    assert np.allclose(scores, expected, rtol=1e-6, atol=1e-8)
    assert np.all(np.diff(scores) <= 0) and len(ranked) == len(s._prepared.candidates)

    started = HARTMANN6.sample(np.random.default_rng(4), 3)  # started meanwhile: kept at a distance
    nxt = s.suggest([*still, *started])
    assert s._prepared is None
    assert all(unit_distance(HARTMANN6, nxt, p) >= 0.01 for p in (*still, *started))
    assert HARTMANN6.key(nxt) not in {HARTMANN6.key(p) for p in (*finished, *elsewhere)}


def test_a_trials_worth_of_results_from_elsewhere_adds_at_most_kept_new_rows_the_best_among_them(monkeypatch):
    s = BayesSuggester(HARTMANN6, True, np.random.default_rng(1))
    s.update([(p, hartmann6(p)) for p in HARTMANN6.sample(np.random.default_rng(2), KEEP_POSTERIOR_FROM)])
    running = HARTMANN6.sample(np.random.default_rng(3), 8)
    s.prepare(running)
    came = HARTMANN6.sample(np.random.default_rng(6), 3 * KEPT_NEW_ROWS)
    s.update([(p, hartmann6(p)) for p in came])
    extended = []
    original = GaussianProcess.extended
    monkeypatch.setattr(GaussianProcess, "extended", lambda gp, X_new, y: extended.append(X_new) or original(gp, X_new, y))
    ranked, scores = s._fold_into_kept_posterior(list(s._points.values()), s._prepared, DEFAULT_OPTIONS)
    [rows] = extended
    assert len(rows) == KEPT_NEW_ROWS and np.all(np.diff(scores) <= 0)
    best = min(came, key=hartmann6)
    assert any(np.allclose(row, s.encoding.encode([best])[0]) for row in rows)  # the best quarter is always in


def test_a_result_that_repeats_a_finished_point_is_folded_in_the_usual_way():
    s = BayesSuggester(HARTMANN6, True, np.random.default_rng(1))
    history = HARTMANN6.sample(np.random.default_rng(2), KEEP_POSTERIOR_FROM)
    s.update([(p, hartmann6(p)) for p in history])
    running = HARTMANN6.sample(np.random.default_rng(3), 8)
    s.prepare(running)
    s.update([(running[0], hartmann6(running[0])), (history[0], hartmann6(history[0]))])  # the average moves
    assert s._fold_into_kept_posterior(list(s._points.values()), s._prepared, DEFAULT_OPTIONS) is None
    s.suggest(running[1:])
    assert s._prepared is None


def test_a_look_ahead_with_too_few_points_or_a_failing_model_leaves_nothing_prepared(caplog):
    s = BayesSuggester(LINE, True, np.random.default_rng(0))
    s.update([({"x": 0.5}, 1.0)])
    s.prepare([])
    assert s._prepared is None  # below MIN_POINTS the next step explores: nothing to prepare
    s.update([({"x": x}, float("nan") if x > 0.5 else x) for x in (0.1, 0.2, 0.9)])  # a value the GP cannot take
    s.prepare([])
    assert s._prepared is None and "look-ahead failed" in caplog.text
