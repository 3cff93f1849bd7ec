"""The master's logic without MPI: events in, instructions out."""

from __future__ import annotations

import numpy as np
import pytest

from hpc_hpo.config import parse_config
from hpc_hpo.errors import EXIT_FAILED, EXIT_OK
from hpc_hpo.results.records import DONE, FAILED
from hpc_hpo.run.protocol import Result
from hpc_hpo.run.scheduler import Dispatch, PhaseRun, Record, Scheduler, StopWorker, TrialFinished, WorkerReady
from hpc_hpo.search.strategies import RandomStrategy


def make_config(phases: list[dict], direction="minimize", max_initial_failures=10):
    return parse_config({
        "experiment": {"objective": "m:f", "seed": 3, "direction": direction,
                       "max_initial_failures": max_initial_failures},
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0},
                  "c": {"type": "categorical", "choices": ["a", "b"]}},
        "phase": phases,
    })


THREE_PHASES = [
    {"strategy": "explicit", "points": [{"x": 0.5, "c": "a"}, {"x": 0.25, "c": "b"}]},
    {"strategy": "grid", "steps": 2},
    {"strategy": "random", "trials": 5},
]


class Driver:
    """Plays the workers: starts them, answers every Dispatch with a result."""

    def __init__(self, scheduler: Scheduler, workers=(1, 2, 3)):
        self.s = scheduler
        self.pending: dict[int, Dispatch] = {}
        self.records: list = []
        self.stops: dict[int, int] = {}
        self.now = 1000.0
        for rank in workers:
            self.apply(self.s.handle(WorkerReady(rank, f"host{rank % 2}"), self.now))

    def apply(self, instructions):
        for ins in instructions:
            if isinstance(ins, Dispatch):
                assert ins.trial.rank not in self.pending, "two tasks in flight on one worker"
                self.pending[ins.trial.rank] = ins
            elif isinstance(ins, Record):
                self.records.append(ins.trial)
            elif isinstance(ins, StopWorker):
                self.stops[ins.rank] = ins.exit_code

    def finish(self, rank, value=None, error=""):
        ins = self.pending.pop(rank)
        self.now += 1
        value = ins.trial.params["x"] if value is None and not error else value
        result = Result(ins.trial.trial_id, value, {"m": 1.0}, error, self.now - 0.5, self.now)
        self.apply(self.s.handle(TrialFinished(rank, result), self.now))

    def run_all(self, value_of=None, error_of=None):
        while self.pending:
            rank = min(self.pending, key=lambda r: self.pending[r].trial.trial_id)
            trial = self.pending[rank].trial
            error = error_of(trial) if error_of else ""
            self.finish(rank, None if error else (value_of(trial) if value_of else None), error)


def test_every_worker_busy_then_all_stopped_when_budget_spent():
    config = make_config(THREE_PHASES)
    d = Driver(Scheduler.from_config(config))
    assert set(d.pending) == {1, 2, 3}  # every worker got a task at once
    d.run_all()
    assert d.s.finished
    assert d.stops == {1: EXIT_OK, 2: EXIT_OK, 3: EXIT_OK}
    assert len(d.records) == config.budget == 2 + 4 + 5
    assert sorted(r.trial_id for r in d.records) == list(range(config.budget))
    assert [r.phase for r in sorted(d.records, key=lambda r: r.trial_id)] == [1] * 2 + [2] * 4 + [3] * 5
    assert [r.strategy for r in sorted(d.records, key=lambda r: r.trial_id)][:3] == ["explicit", "explicit", "grid"]
    assert all(r.status == DONE and r.metrics == {"m": 1.0} for r in d.records)
    assert d.s.progress.done == config.budget and d.s.progress.failed == 0


def test_fewer_trials_than_workers_stops_the_spare_workers_at_once():
    d = Driver(Scheduler.from_config(make_config([{"strategy": "random", "trials": 2}])), workers=(1, 2, 3, 4))
    assert set(d.pending) == {1, 2} and set(d.stops) == {3, 4}
    d.run_all()
    assert d.s.finished and len(d.records) == 2


def test_records_carry_host_times_and_submit_time():
    d = Driver(Scheduler.from_config(make_config([{"strategy": "random", "trials": 1}])), workers=(5,))
    d.finish(5)
    (record,) = d.records
    assert record.rank == 5 and record.host == "host1"
    assert record.t_submit == 1000.0 and record.t_start == 1000.5 and record.t_end == 1001.0


@pytest.mark.parametrize("direction, expected", [("minimize", 0.0), ("maximize", 1.0)])
def test_best_follows_the_direction(direction, expected):
    config = make_config([{"strategy": "grid", "steps": 3}], direction=direction)
    d = Driver(Scheduler.from_config(config))
    d.run_all()
    assert d.s.progress.best_value == expected
    best = next(r for r in d.records if r.trial_id == d.s.progress.best_trial)
    assert best.params["x"] == expected


def test_failed_trials_are_records_and_the_run_goes_on():
    d = Driver(Scheduler.from_config(make_config([{"strategy": "random", "trials": 20}])))
    d.run_all(error_of=lambda t: "ValueError: odd" if t.trial_id % 2 else "")
    assert len(d.records) == 20
    failed = [r for r in d.records if r.status == FAILED]
    assert len(failed) == 10 and all(r.value is None and r.error == "ValueError: odd" for r in failed)
    assert d.s.exit_code == EXIT_OK and d.s.progress.failed == 10


def test_first_trials_all_failing_stops_the_run_as_broken():
    config = make_config([{"strategy": "random", "trials": 100}])
    d = Driver(Scheduler.from_config(config))
    d.run_all(error_of=lambda t: "ZeroDivisionError: division by zero")
    assert d.s.finished
    assert d.s.exit_code == EXIT_FAILED
    assert "the first 10 trials all failed; the objective looks broken" in d.s.error
    assert "ZeroDivisionError" in d.s.error
    # The trials running when the tenth failed still finish and are recorded; nothing new starts.
    assert 10 <= len(d.records) <= 10 + 2
    assert set(d.stops.values()) == {EXIT_FAILED}


def test_one_success_among_the_first_trials_disarms_the_check():
    config = make_config([{"strategy": "random", "trials": 30}])
    d = Driver(Scheduler.from_config(config))
    d.run_all(error_of=lambda t: "" if t.trial_id == 4 else "RuntimeError: flaky")
    assert d.s.exit_code == EXIT_OK and len(d.records) == 30


def test_check_can_be_turned_off():
    d = Driver(Scheduler.from_config(make_config([{"strategy": "random", "trials": 15}], max_initial_failures=0)))
    d.run_all(error_of=lambda t: "RuntimeError: always")
    assert d.s.exit_code == EXIT_OK and len(d.records) == 15


def test_a_result_for_the_wrong_trial_is_an_internal_error():
    d = Driver(Scheduler.from_config(make_config([{"strategy": "random", "trials": 5}])))
    with pytest.raises(RuntimeError, match="rank 1 returned trial 99"):
        d.s.handle(TrialFinished(1, Result(99, 1.0, {}, "", 0.0, 1.0)), 0.0)


def test_a_strategy_that_runs_dry_gives_way_to_the_next_phase():
    class TwoPoints(RandomStrategy):
        def __init__(self, *args):
            super().__init__(*args)
            self.left = 2

        def ask(self):
            self.left -= 1
            return super().ask() if self.left >= 0 else None

    config = make_config([{"strategy": "random", "trials": 6}, {"strategy": "random", "trials": 3}])
    phases = [PhaseRun(config.phases[0], TwoPoints(config.space, {}, np.random.default_rng(0))),
              PhaseRun(config.phases[1], RandomStrategy(config.space, {}, np.random.default_rng(1)))]
    d = Driver(Scheduler(phases))
    d.run_all()
    assert [r.phase for r in sorted(d.records, key=lambda r: r.trial_id)] == [1, 1, 2, 2, 2]
    assert d.s.progress.budget == 5 and d.s.finished


def test_same_seed_same_trials():
    def params():
        d = Driver(Scheduler.from_config(make_config(THREE_PHASES)))
        d.run_all()
        return [(r.trial_id, r.params) for r in sorted(d.records, key=lambda r: r.trial_id)]

    assert params() == params()


# --- Bayesian trials and repeats --------------------------------------------------------------

from hpc_hpo.run.scheduler import ShowRunning, TrialStarted  # noqa: E402


class BayesDriver(Driver):
    """Also plays the worker's side of a Bayesian task: it chooses a point and says so."""

    def __init__(self, scheduler, workers=(1, 2, 3)):
        self.suggests = []  # (rank, Suggest) as the workers received them
        self.shown = []
        self.points = iter(np.linspace(0.01, 0.99, 500))
        super().__init__(scheduler, workers)

    def apply(self, instructions):
        for ins in instructions:
            if isinstance(ins, Dispatch) and ins.suggest is not None:
                assert ins.trial.params is None
                self.suggests.append((ins.trial.rank, ins.suggest))
            elif isinstance(ins, ShowRunning):
                self.shown.append(ins.trial)
        super().apply(instructions)

    def choose(self, rank):
        trial = self.pending[rank].trial
        params = {"x": float(next(self.points)), "c": "a"}
        self.apply(self.s.handle(TrialStarted(rank, trial.trial_id, params, 0.25), self.now))
        self.pending[rank] = Dispatch(trial._replace(params=params))

    def run_all(self, value_of=None, error_of=None):
        while self.pending:
            choosing = [r for r, ins in self.pending.items() if ins.trial.params is None]
            if choosing:  # choosing may free a waiting worker, whose task is then chosen next round
                self.choose(choosing[0])
                continue
            rank = min(self.pending, key=lambda r: self.pending[r].trial.trial_id)
            self.finish(rank, error=error_of(self.pending[rank].trial) if error_of else "")


def bayes_config(trials=6, repeats=1, sequential=True, random_first=3, **options):
    return make_config([{"strategy": "random", "trials": random_first},
                        {"strategy": "bayes", "trials": trials, "repeats": repeats, "sequential": sequential,
                         **options}])


def test_bayesian_tasks_carry_only_unseen_results_and_the_points_running_elsewhere():
    d = BayesDriver(Scheduler.from_config(bayes_config(trials=6, random_first=3)), workers=(1, 2, 3))
    assert not d.suggests  # the 3 random points go out first
    d.finish(1)  # rank 1 is free: its first Bayesian task
    rank, suggest = d.suggests[-1]
    assert rank == 1 and len(suggest.observations) == 1  # the one finished trial
    assert sorted(p["x"] for p in suggest.pending) == sorted(d.pending[r].trial.params["x"] for r in (2, 3))
    d.choose(1)
    d.finish(2)
    rank, suggest = d.suggests[-1]
    assert rank == 2 and len(suggest.observations) == 2  # rank 2 has seen nothing yet: both results
    d.choose(2)
    d.finish(1)
    rank, suggest = d.suggests[-1]
    assert rank == 1 and len(suggest.observations) == 2  # only what rank 1 had not seen: trials 1 and 3
    assert {p["x"] for p in suggest.pending} == {d.pending[2].trial.params["x"], d.pending[3].trial.params["x"]}


def test_a_refresh_brings_the_unseen_results_and_the_running_points_and_the_next_task_only_what_came_after():
    from hpc_hpo.run.scheduler import RefreshAsked, SendUpdate

    d = BayesDriver(Scheduler.from_config(bayes_config(trials=8, random_first=3, lookahead=True)), workers=(1, 2, 3))
    d.finish(1)
    d.choose(1)  # rank 1 runs Bayesian trial 3, having seen trial 0
    trial = d.pending[1].trial
    d.finish(2)
    d.choose(2)
    [update] = d.s.handle(RefreshAsked(1, trial.trial_id), d.now)  # shortly before trial 3 ends
    assert isinstance(update, SendUpdate) and (update.rank, update.trial_id, update.suggest.slot) == (1, 3, 0)
    assert [o[0]["x"] for o in update.suggest.observations] == [d.records[-1].params["x"]]  # trial 1: unseen
    running = {p["x"] for p in update.suggest.pending}
    assert running == {d.pending[r].trial.params["x"] for r in (1, 2, 3)}  # its own trial among them
    assert d.s.handle(RefreshAsked(1, trial.trial_id + 1), d.now) == []  # not the trial it runs: nothing
    assert d.s.handle(RefreshAsked(3, d.pending[3].trial.trial_id), d.now) == []  # a random trial: nothing
    d.finish(3)
    d.choose(3)
    d.finish(1)  # trial 3 ends: the next task carries trial 2 and trial 3 only
    rank, suggest = d.suggests[-1]
    assert rank == 1 and sorted(o[0]["x"] for o in suggest.observations) == sorted(
        r.params["x"] for r in d.records[-2:])


def test_without_lookahead_a_refresh_is_not_answered():
    from hpc_hpo.run.scheduler import RefreshAsked

    d = BayesDriver(Scheduler.from_config(bayes_config(trials=8, random_first=3)), workers=(1, 2, 3))
    d.finish(1)
    d.choose(1)
    assert d.s.handle(RefreshAsked(1, d.pending[1].trial.trial_id), d.now) == []


def test_a_bayesian_task_carries_the_pending_points_chosen_last_up_to_the_limit(monkeypatch):
    """With thousands of workers every running point in every task would make the master's work per result grow
    with the workers: a task carries the MAX_PENDING points that became known last, and none that finished."""
    import hpc_hpo.run.scheduler as scheduler_module

    monkeypatch.setattr(scheduler_module, "MAX_PENDING", 3)
    workers = tuple(range(1, 7))
    d = BayesDriver(Scheduler.from_config(bayes_config(trials=20, random_first=6)), workers=workers)
    order = sorted(workers, key=lambda r: d.pending[r].trial.trial_id)  # the random points, in the order handed out
    d.finish(order[0])
    rank, suggest = d.suggests[-1]
    assert [p["x"] for p in suggest.pending] == [d.pending[r].trial.params["x"] for r in reversed(order[-3:])]
    d.choose(rank)
    d.finish(order[-1])  # the last-handed-out random point finishes: it is no longer pending
    d.choose(d.suggests[-1][0])
    later = d.suggests[-1][1]
    assert [p["x"] for p in later.pending] == [d.pending[rank].trial.params["x"],
                                                d.pending[order[-2]].trial.params["x"],
                                                d.pending[order[-3]].trial.params["x"]]


def test_the_chosen_point_is_shown_as_running_and_recorded():
    d = BayesDriver(Scheduler.from_config(bayes_config(trials=2, random_first=1)), workers=(1,))
    d.run_all()
    bayes = [r for r in d.records if r.strategy == "bayes"]
    assert len(bayes) == 2 and all(r.params["c"] == "a" and r.suggest_seconds == 0.25 for r in bayes)
    assert [t.trial_id for t in d.shown] == [r.trial_id for r in bayes]
    assert all(r.params is not None for r in d.records)


def test_sequential_suggestions_wait_for_the_point_being_chosen():
    d = BayesDriver(Scheduler.from_config(bayes_config(trials=6, random_first=2)), workers=(1, 2))
    d.finish(1)  # rank 1 starts choosing
    d.finish(2)  # rank 2 is free too, but must wait: rank 1 has not said its point yet
    assert 2 not in d.pending and [r for r, _ in d.suggests] == [1]
    d.choose(1)  # rank 1's point is known: now rank 2 chooses, knowing it
    rank, suggest = d.suggests[-1]
    assert rank == 2 and d.pending[1].trial.params in suggest.pending


def test_sequential_with_thousands_of_workers_lets_one_per_64_choose_at_once():
    """Choosing one at a time would cap a 4,096-worker search at one point per step: 130 workers, 3 at once."""
    workers = tuple(range(1, 131))
    d = BayesDriver(Scheduler.from_config(bayes_config(trials=300, random_first=130)), workers=workers)
    for rank in workers[:10]:
        d.finish(rank)  # ten free workers, but only three may choose
    assert [r for r, _ in d.suggests] == list(workers[:3]) and all(r not in d.pending for r in workers[3:10])
    assert [s.slot for _, s in d.suggests] == [0, 1, 2]  # each takes its own point of the acquisition's best
    d.choose(2)  # one point known: one more worker chooses, knowing it, in the slot rank 2 left
    assert [r for r, _ in d.suggests] == list(workers[:4]) and d.suggests[-1][1].slot == 1
    assert d.pending[2].trial.params in d.suggests[-1][1].pending


def test_auto_sequential_lets_as_many_choose_as_keep_choosing_half_busy():
    """Steps of 0.25 s and trials of 0.5 s with 8 workers: one at a time would keep choosing busy 4 times over;
    with "auto", 8 x 0.25 / (0.5 x 0.5) = 8 may choose at once. Before any step is timed: one at a time."""
    workers = tuple(range(1, 9))
    d = BayesDriver(Scheduler.from_config(bayes_config(trials=40, random_first=8, sequential="auto")), workers=workers)
    d.finish(1)  # the driver's trials take 0.5 s
    d.finish(2)
    assert [r for r, _ in d.suggests] == [1]  # no step timed yet: one at a time
    d.choose(1)  # a step of 0.25 s
    for rank in workers[2:]:
        d.finish(rank)
    assert sorted(r for r, _ in d.suggests) == list(range(1, 9))  # all seven others choose at once


def test_without_sequential_every_free_worker_chooses_at_once():
    d = BayesDriver(Scheduler.from_config(bayes_config(trials=6, random_first=2, sequential=False)), workers=(1, 2))
    d.finish(1)
    d.finish(2)
    assert [r for r, _ in d.suggests] == [1, 2]


def test_master_work_per_result_does_not_grow_with_the_history():
    """Each Bayesian task carries only the results its worker has not seen: O(workers), not O(history)."""
    d = BayesDriver(Scheduler.from_config(bayes_config(trials=400, random_first=4)), workers=(1, 2, 3, 4))
    d.run_all()
    sizes = [len(s.observations) for _, s in d.suggests]
    assert len(d.records) == 404 and max(sizes[8:]) <= 4  # at most one result per worker since its last task
    for rank in (1, 2, 3, 4):  # and every result reaches a worker at most once
        assert sum(len(s.observations) for r, s in d.suggests if r == rank) <= len(d.s.history)


def test_the_history_and_the_running_points_are_kept_only_for_workers_that_choose_points():
    """A search of lists, grids and random points keeps neither (no work per result for them, no per-worker table);
    with a Bayesian phase later on, both are kept from the first trial, so its first task has the whole history."""
    plain = Driver(Scheduler.from_config(make_config(THREE_PHASES)), workers=(1, 2, 3))
    plain.finish(1)
    assert plain.s._pending_points == {} and plain.s.history == []
    plain.run_all()
    assert len(plain.records) == 11 and plain.s.history == []

    d = BayesDriver(Scheduler.from_config(bayes_config(trials=2, random_first=4)), workers=(1, 2))
    assert sorted(d.s._pending_points) == sorted(ins.trial.trial_id for ins in d.pending.values())
    d.run_all()
    assert len(d.s.history) == 6
    first_bayes = next(s for _, s in d.suggests)
    assert len(first_bayes.observations) == 3  # the random phase's results so far, learnt before any bayes task


def test_repeats_run_each_point_on_different_workers():
    config = make_config([{"strategy": "random", "trials": 4, "repeats": 3}])
    d = Driver(Scheduler.from_config(config), workers=(1, 2, 3))
    d.run_all()
    assert len(d.records) == config.budget == 12
    groups = {}
    for r in d.records:
        groups.setdefault(r.group, []).append(r)
    assert len(groups) == 4
    for group, trials in groups.items():
        assert sorted(t.repeat for t in trials) == [0, 1, 2]
        assert len({t.rank for t in trials}) == 3  # three evaluations, three workers
        assert len({tuple(t.params.items()) for t in trials}) == 1
        assert min(t.trial_id for t in trials) == group


def test_repeats_of_a_bayesian_point_follow_its_choice():
    d = BayesDriver(Scheduler.from_config(bayes_config(trials=2, repeats=2, random_first=1)), workers=(1, 2))
    d.run_all()
    bayes = [r for r in d.records if r.strategy == "bayes"]
    assert len(bayes) == 4 and d.s.progress.budget == 1 + 2 * 2  # this phase's repeats only
    for group in {r.group for r in bayes}:
        pair = [r for r in bayes if r.group == group]
        assert sorted(r.repeat for r in pair) == [0, 1] and pair[0].params == pair[1].params
    assert d.s.finished and set(d.stops) == {1, 2}


def test_a_free_worker_waits_for_repeats_of_a_point_still_being_chosen():
    config = make_config([{"strategy": "random", "trials": 1, "repeats": 2},
                          {"strategy": "bayes", "trials": 1, "repeats": 2}])
    d = BayesDriver(Scheduler.from_config(config), workers=(1, 2))
    # Phase 1 (random, 1 point, 2 repeats) occupies both workers; then one Bayesian point with 2 repeats.
    assert d.pending[2].trial.repeat == 1
    d.finish(1)  # rank 1 chooses the Bayesian point
    d.finish(2)  # no new point left, but rank 1's choice will bring a repeat: rank 2 must wait, not stop
    assert 2 not in d.stops and 2 not in d.pending
    d.choose(1)
    assert d.pending[2].trial.repeat == 1  # the repeat went to the waiting worker
    d.run_all()
    assert d.s.finished and len(d.records) == 4


def test_near_the_deadline_a_trial_is_handed_out_only_if_it_will_end_in_time():
    # Workers report 0.5 s of work, but each trial takes 2 s from hand-out to result on the
    # master's clock (messages, a slow node): the deadline is judged by those 2 s, plus slack.
    config = make_config([{"strategy": "random", "trials": 50}])
    d = Driver(Scheduler.from_config(config, deadline=1010.0), workers=(1,))
    while d.pending:
        ins = d.pending.pop(1)
        d.now += 2.0
        result = Result(ins.trial.trial_id, 0.0, {}, "", d.now - 0.5, d.now)
        d.apply(d.s.handle(TrialFinished(1, result), d.now))
    assert d.s.expected_duration() == pytest.approx(2.0 * 1.1 + 1.0)
    assert d.s.out_of_time and d.stops == {1: 3}
    # Results at 1002, 1004, 1006: each next one would end by 1006 + 3.2 < 1010. At 1008, 1008 + 3.2 > 1010.
    assert len(d.records) == 4 and max(r.t_end for r in d.records) == 1008.0


# --- resuming: Scheduler.restore ---------------------------------------------------------------------------


def finished_records(config, count, value_of=lambda trial: trial.params["x"]):
    """The first ``count`` records of an uninterrupted run of ``config`` (one worker, in order)."""
    d = Driver(Scheduler.from_config(config), workers=(1,))
    while len(d.records) < count:
        d.finish(1, value_of(d.pending[1].trial))
    return d.records[:count], d


def test_restore_counts_finished_trials_and_continues_each_phase_where_it_was():
    config = make_config(THREE_PHASES)
    records, reference = finished_records(config, 4)  # both explicit points, two of the four grid points
    s = Scheduler.from_config(config)
    s.restore(records, rerun=[], next_id=4)
    assert (s.progress.finished, s.progress.issued, s.progress.budget) == (4, 4, config.budget)
    assert s.progress.best_value == min(r.value for r in records)
    d = Driver(s, workers=(1,))
    d.run_all()
    resumed = [(r.trial_id, r.phase, r.params) for r in d.records]
    whole, _ = finished_records(config, config.budget)
    assert resumed == [(r.trial_id, r.phase, r.params) for r in whole[4:]]  # as one uninterrupted run


def test_restore_hands_out_the_trials_to_run_again_first_with_their_ids_and_the_next_attempt():
    config = make_config(THREE_PHASES)
    records, _ = finished_records(config, 5)
    rerun = [records[3]._replace(status="running", value=None, t_start=float("nan"), t_end=float("nan")),
             records[4]._replace(status="running", value=None, t_start=float("nan"), t_end=float("nan"))]
    s = Scheduler.from_config(config)
    s.restore(records[:3], rerun=rerun, next_id=5)
    assert [t.trial_id for t in s.waiting_reruns] == [3, 4]
    d = Driver(s, workers=(1, 2, 3))
    first = sorted((ins.trial.trial_id, ins.trial.attempt, ins.trial.params == rerun[ins.trial.trial_id - 3].params)
                   for ins in d.pending.values() if ins.trial.trial_id in (3, 4))
    assert first == [(3, 2, True), (4, 2, True)]
    assert not s.waiting_reruns
    d.run_all()
    assert sorted(r.trial_id for r in d.records) == list(range(3, config.budget))


@pytest.mark.parametrize("lost", [[3], [3, 7], [0, 8]], ids=["a grid point", "grid and random", "first and random"])
def test_restore_proposes_again_first_the_points_whose_trials_no_row_holds(lost):
    """Trials handed out just before a kill may be in no row of the file while later ones are (under load /running
    is written less often than /trials): their points are proposed again, first, and no recorded point twice."""
    config = make_config(THREE_PHASES)
    whole, _ = finished_records(config, config.budget)
    kept = [r for r in whole[:9] if r.trial_id not in lost]
    s = Scheduler.from_config(config)
    s.restore(kept, rerun=[], next_id=9)
    d = Driver(s, workers=(1,))
    d.run_all()
    assert [r.params for r in d.records[:len(lost)]] == [whole[i].params for i in lost]  # the lost points first
    assert [r.trial_id for r in d.records] == list(range(9, 9 + config.budget - len(kept)))

    def points(records):
        return sorted((r.phase, r.params["x"], r.params["c"]) for r in records)

    assert points(kept + d.records) == points(whole)  # every point of the plan once: none lost, none twice


def test_restore_of_points_the_strategy_does_not_give_back_goes_on_after_as_many_as_were_recorded():
    """A recorded point the phase's strategy never proposes (the space was changed with --force): no point is taken
    for lost; the strategy goes on after as many points as were recorded, as before."""
    config = make_config(THREE_PHASES)
    whole, _ = finished_records(config, config.budget)
    kept = whole[:4]
    kept[3] = kept[3]._replace(params={"x": 0.123, "c": "a"})  # a grid point of another space
    s = Scheduler.from_config(config)
    s.restore(kept, rerun=[], next_id=4)
    d = Driver(s, workers=(1,))
    d.run_all()
    assert [r.params for r in d.records] == [r.params for r in whole[4:]]


def test_restore_queues_the_missing_repeats_of_a_point():
    config = make_config([{"strategy": "random", "trials": 3, "repeats": 2}])
    records, _ = finished_records(config, 4)  # one worker: the three points, then point 0 again
    assert [(r.group, r.repeat) for r in records] == [(0, 0), (1, 0), (2, 0), (0, 1)]
    s = Scheduler.from_config(config)
    s.restore(records, rerun=[], next_id=4)
    d = Driver(s, workers=(1,))
    d.run_all()
    assert sorted((r.group, r.repeat) for r in d.records) == [(1, 1), (2, 1)]
    assert [r.trial_id for r in d.records] == [4, 5] and all(r.params == records[r.group].params for r in d.records)


# --- workers that retire, and a shutdown -------------------------------------------------------------------


def test_a_retiring_worker_is_stopped_at_once_and_the_others_finish_the_budget():
    config = make_config([{"strategy": "random", "trials": 6}])
    d = Driver(Scheduler.from_config(config), workers=(1, 2))
    trial = d.pending.pop(2).trial
    result = Result(trial.trial_id, None, {}, "TrialProcessStartTimeout: ...", 0.0, 1.0, "failed",
                    retire="its trial process failed to start 3 times in a row")
    d.apply(d.s.handle(TrialFinished(2, result), 1001.0))
    assert d.stops == {2: EXIT_OK} and 2 in d.s.retired and 2 not in d.pending
    d.run_all()
    assert d.s.finished and d.s.exit_code == EXIT_OK and len(d.records) == 6
    assert {r.rank for r in d.records[1:]} == {1}


def test_when_the_last_worker_retires_with_work_left_the_search_fails():
    config = make_config([{"strategy": "random", "trials": 6}])
    d = Driver(Scheduler.from_config(config), workers=(1,))
    trial = d.pending.pop(1).trial
    result = Result(trial.trial_id, None, {}, "boom", 0.0, 1.0, "failed", retire="its trial process failed to start")
    d.apply(d.s.handle(TrialFinished(1, result), 1001.0))
    assert d.s.finished and d.s.exit_code == EXIT_FAILED and d.stops == {1: EXIT_FAILED}
    assert d.s.error.startswith("no worker left to run trials: every worker retired (the last, rank 1 on host1")


def test_after_a_shutdown_late_results_are_recorded_and_nothing_more_is_handed_out():
    config = make_config([{"strategy": "random", "trials": 10}])
    d = Driver(Scheduler.from_config(config), workers=(1, 2, 3))
    assert d.s.shutdown(3) == [1, 2, 3] and d.s.shutdown(3) == []  # each worker is told once
    assert d.s.finished
    d.finish(2)
    assert [r.rank for r in d.records] == [2] and set(d.pending) == {1, 3}  # no new task, no StopWorker
    assert d.stops == {} and sorted(t.trial_id for t in d.s.running.values()) == [0, 2]  # still to run again


#: Random points first, then a phase whose points the workers choose: what they learn is kept from the start.
LEARNING_PHASES = [{"strategy": "random", "trials": 6}, {"strategy": "bayes", "trials": 4}]


def stopping_scheduler(rule="asha", phases=None, direction="minimize"):
    config = parse_config({
        "experiment": {"objective": "m:f", "seed": 3, "direction": direction},
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "phase": phases or [{"strategy": "random", "trials": 6}],
        "stopping": {"rule": rule, "metric": "val_loss", "max_epochs": 9},
    })
    return Scheduler.from_config(config)


def test_reported_epochs_are_judged_at_the_rungs_and_a_stopped_trial_is_pruned_not_failed():
    from hpc_hpo.results.records import PRUNED
    from hpc_hpo.run.scheduler import EpochReported, Judge

    s = stopping_scheduler(phases=LEARNING_PHASES)
    d = Driver(s, workers=(1, 2))
    first, second = d.pending[1].trial.trial_id, d.pending[2].trial.trial_id
    assert s.rungs_for(first) == (1, 3)
    assert s.handle(EpochReported(1, first, 0, {"val_loss": 0.5, "loss": 0.4}), d.now) == [Judge(1, first, 0, False)]
    assert s.handle(EpochReported(2, second, 0, {"loss": 0.1}), d.now) == []  # not the rule's metric
    assert s.handle(EpochReported(2, second, 0, {"val_loss": 0.9}), d.now) == [Judge(2, second, 0, True)]
    assert s.handle(EpochReported(1, first, 1, {"val_loss": 0.4}), d.now) == []  # between rungs
    assert s.handle(EpochReported(3, 99, 0, {"val_loss": 0.1}), d.now) == []  # no such running trial
    ins = d.pending.pop(2)
    d.apply(s.handle(TrialFinished(2, Result(ins.trial.trial_id, 0.9, {}, "", 1.0, 2.0, PRUNED, epochs=1)), d.now))
    pruned = d.records[-1]
    assert (pruned.status, pruned.value, pruned.epochs) == (PRUNED, 0.9, 1)
    p = s.progress
    assert (p.pruned, p.failed, p.done, p.best_trial) == (1, 0, 0, None)  # never the best, never a failure
    assert s.history[-1] == ({"x": ins.trial.params["x"]}, None, (0.9,))  # what Bayesian workers learn from


def test_a_trial_that_ran_to_the_end_brings_its_rung_values_and_its_final_value():
    from hpc_hpo.run.scheduler import EpochReported

    s = stopping_scheduler(phases=LEARNING_PHASES, direction="maximize")
    d = Driver(s, workers=(1,))
    trial = d.pending[1].trial.trial_id
    for epoch, value in enumerate([0.5, 0.6, 0.7]):
        s.handle(EpochReported(1, trial, epoch, {"val_loss": value}), d.now)
    d.finish(1, value=0.8)
    assert d.s.history[-1][1:] == (0.8, (0.5, 0.7, 0.8))
    assert s.progress.best_value == 0.8


def test_restore_rebuilds_the_rungs_from_the_reports_of_finished_trials():
    from hpc_hpo.run.scheduler import EpochReported, Judge

    s = stopping_scheduler()
    s.restore([], [], next_id=10, reports=[(0, 0, 0.2), (1, 0, 0.3), (2, 0, 0.1)])
    d = Driver(s, workers=(1,))
    trial = d.pending[1].trial.trial_id
    assert trial == 10  # ids go on after those of the file
    # Rung 1 holds 0.1, 0.2, 0.3: with 0.25, n = 4 keeps 2 and two are better: stopped.
    assert s.handle(EpochReported(1, trial, 0, {"val_loss": 0.25}), d.now) == [Judge(1, trial, 0, True)]
