"""The worker's logic without MPI: its answers to each message, another install, retiring on a sick node."""

from __future__ import annotations

import os
import signal
import textwrap
import time

import numpy as np
import pytest

from hpc_hpo import __version__
from hpc_hpo.config import parse_config
from hpc_hpo.errors import EXIT_OK, EXIT_RESUMABLE, TrialAbandoned
from hpc_hpo.run.protocol import PROTOCOL_VERSION, Bye, Hello, Join, Refresh, Result, Setup, Stop, Suggested, Task, Update
from hpc_hpo.run.signals import StopRequest
from hpc_hpo.run.worker import MAX_START_FAILURES, Worker
from hpc_hpo.search.gp.suggester import KEEP_POSTERIOR_FROM
from hpc_hpo.trials.devices import local_place

#: Imports fine until a trial has run on this worker; after that every new trial process hangs while it
#: imports it (a file system or GPU driver that stopped answering).
SICKENS = """
import os, time

MARK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sick")
if os.path.exists(MARK):
    time.sleep(3600)

def objective(params, trial):
    open(MARK, "w").close()
    return params["x"]
"""


def worker_with(tmp_path, workers: dict | None = None, objective: str = SICKENS,
                phases: list | None = None) -> tuple[Worker, list]:
    (tmp_path / "objective.py").write_text(textwrap.dedent(objective))
    config = parse_config({"experiment": {"objective": "objective.py:objective", "seed": 1,
                                          "results": str(tmp_path / "r.h5")},
                           "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
                           "phase": phases or [{"strategy": "random", "trials": 8}],
                           "workers": workers or {}}, base_dir=str(tmp_path))
    sent: list = []
    worker = Worker(1, send=sent.append, host="node1")
    worker.join(local_place(1))
    worker.handle(Setup.of(config))
    return worker, sent


def test_a_worker_joins_then_says_hello_once_its_objective_is_loaded(tmp_path):
    worker, sent = worker_with(tmp_path, {"executor": "inline"})
    assert isinstance(sent[0], Join) and (sent[0].version, sent[0].protocol) == (__version__, PROTOCOL_VERSION)
    assert sent[1] == Hello(1, "node1", os.getpid())
    worker.handle(Task(0, {"x": 0.25}, 1, "random"))
    result = sent[2]
    assert isinstance(result, Result) and (result.trial_id, result.value, result.status) == (0, 0.25, "done")
    assert result.retire == ""


def test_a_setup_from_another_install_is_refused_without_unpickling_it():
    sent: list = []
    worker = Worker(3, send=sent.append, host="node07")
    worker.handle(Setup("0.0.1", 3, b"\x80\x04this would fail to unpickle"))
    [hello] = sent
    assert hello.error == (f"rank 3 on node07 runs hpc_hpo {__version__} (protocol {PROTOCOL_VERSION}) but the "
                           f"master runs 0.0.1 (protocol 3); install one version everywhere")
    assert worker.config is None


@pytest.mark.parametrize("code, answer", [(EXIT_RESUMABLE, [Bye(1)]), (EXIT_OK, [])])
def test_after_a_shutdowns_stop_the_worker_says_bye(tmp_path, code, answer):
    worker, sent = worker_with(tmp_path, {"executor": "inline"})
    worker.handle(Stop(code))
    assert sent[2:] == answer


def test_a_worker_whose_trial_process_cannot_start_three_times_in_a_row_retires(tmp_path):
    worker, sent = worker_with(tmp_path, {"executor": "process", "max_trials_per_process": 1,
                                          "startup_timeout": 60.0})  # a healthy start may take seconds when busy
    assert sent[1].error == ""
    worker.executor.startup_timeout = 1.0  # the node is about to sicken: a hung start fails fast from here
    results = []
    for trial in range(1 + MAX_START_FAILURES):
        worker.handle(Task(trial, {"x": 0.5}, 1, "random"))
        results.append(sent[-1])
    first, *failed = results
    assert first.status == "done" and first.retire == ""
    assert [r.status for r in failed] == ["failed"] * MAX_START_FAILURES
    for result in failed:
        assert result.error == ("TrialProcessStartTimeout: the trial process did not finish importing the objective "
                                "within 1 s (workers.startup_timeout) (rank 1 on node1)")
    assert [bool(r.retire) for r in failed] == [False] * (MAX_START_FAILURES - 1) + [True]
    assert failed[-1].retire == (f"its trial process failed to start {MAX_START_FAILURES} times in a row (last: "
                                 f"TrialProcessStartTimeout: the trial process did not finish importing the objective "
                                 f"within 1 s (workers.startup_timeout) (rank 1 on node1))")
    assert worker.executor is None  # no child left behind, none started again


def test_a_worker_whose_first_trial_process_hangs_says_so_in_its_hello(tmp_path):
    (tmp_path / "sick").touch()
    worker, sent = worker_with(tmp_path, {"executor": "process", "startup_timeout": 1.0})
    assert sent[1].error == ("workers.startup_timeout: worker rank 1 (node1) did not finish importing the objective "
                             "within 1 s")


def test_a_trial_handed_out_after_a_stop_signal_is_not_started(tmp_path):
    """One process: Ctrl-C between two trials must not wait for the next one to run (it runs on resume)."""
    worker, sent = worker_with(tmp_path, {"executor": "inline"})
    worker.stop_request = StopRequest(on_second=lambda signum: None)
    worker.stop_request.signum = signal.SIGINT
    with pytest.raises(TrialAbandoned):
        worker.handle(Task(0, {"x": 0.25}, 1, "random"))
    assert len(sent) == 2  # Join and Hello: no Result
    assert not (tmp_path / "sick").exists()  # the objective never ran


SLOW = """
import time

def objective(params):
    time.sleep(0.3)
    return (params["x"] - 0.3) ** 2
"""


@pytest.mark.parametrize("lookahead", [True, False])
def test_a_bayesian_trial_runs_beside_the_look_ahead_for_the_next_step(tmp_path, lookahead):
    worker, sent = worker_with(tmp_path, {"executor": "inline"}, SLOW,
                               [{"strategy": "bayes", "trials": 8, "lookahead": lookahead}])
    seen = [({"x": x}, (x - 0.3) ** 2) for x in (0.0, 0.5, 1.0)]
    worker.handle(Task(3, None, 1, "bayes", suggest=(seen, [{"x": 0.8}], 0)))
    chosen, result = sent[-2:]
    assert (chosen.trial_id, result.trial_id, result.status) == (3, 3, "done")
    assert (worker._lookahead is not None) is lookahead  # started with the trial, not waited for
    worker._join_look_ahead()
    prepared = worker._suggester._prepared
    assert (prepared is not None) is lookahead
    if lookahead:  # prepared with the trial it ran beside and the point running elsewhere as pending
        xs = worker._suggester.encoding.decode(prepared.candidates)
        assert all(abs(p["x"] - q) >= 0.01 for p in xs for q in (chosen.params["x"], 0.8))
    worker.handle(Task(4, None, 1, "bayes", suggest=([(chosen.params, result.value)], [], 0)))
    assert sent[-1].trial_id == 4 and sent[-1].status == "done"
    assert worker._suggester.observations == 4  # the step waited for the look-ahead, then folded in the result
    worker.close()
    assert worker._lookahead is None


def test_under_mpi_the_look_ahead_asks_for_the_latest_results_shortly_before_the_trial_ends(tmp_path):
    """With trials in a child process (the driver asks ``abandon`` meanwhile), the look-ahead does not prepare the
    next step when the trial starts: near its expected end (the last trial's length) it sends a Refresh, and
    prepares the step from the master's Update; the next task then carries only what came after."""
    worker, sent = worker_with(tmp_path, {"executor": "process"}, SLOW,
                               [{"strategy": "bayes", "trials": 8, "lookahead": True}])
    news = [({"x": 0.31}, 0.0001)]  # a result the master learnt while the second trial ran

    def send(message):
        sent.append(message)
        if isinstance(message, Refresh):  # the master answers at once: the news, the points running now
            chosen = next(m for m in reversed(sent) if isinstance(m, Suggested))
            worker.handle(Update(message.trial_id, (list(news), [chosen.params], 0)))
            news.clear()  # what it sent is seen

    worker.send = send
    worker.can_refresh = True
    worker.abandon = lambda: worker.refresh() or False  # what the MPI driver does while a trial runs
    seen = [({"x": x}, (x - 0.3) ** 2) for x in (0.0, 0.5, 1.0)]
    worker.handle(Task(3, None, 1, "bayes", suggest=(seen, [], 0)))
    assert not any(isinstance(m, Refresh) for m in sent)  # the first trial: no length to go by, prepared at its start
    first = sent[-1]
    worker.handle(Task(4, None, 1, "bayes", suggest=([(sent[-2].params, first.value)], [], 0)))
    kinds = [type(m) for m in sent[-3:]]
    assert kinds == [Suggested, Refresh, Result], kinds  # asked while the trial ran, before its result
    refresh_at = next(m for m in sent if isinstance(m, Refresh))
    assert refresh_at.trial_id == 4
    assert worker._suggester.observations == 5  # the three, the first trial's result, the news of the Update
    assert worker._lookahead is not None  # the helper thread prepares the step from the Update
    worker._lookahead.join()
    prepared = worker._suggester._prepared
    assert prepared is not None and prepared.observations == 5
    xs = worker._suggester.encoding.decode(prepared.candidates)  # its own running point kept at a distance
    assert all(abs(p["x"] - sent[-3].params["x"]) >= 0.01 for p in xs)
    second = sent[-1]
    worker.handle(Task(5, None, 1, "bayes", suggest=([(sent[-3].params, second.value)], [], 0)))
    assert sent[-1].trial_id == 5 and sent[-1].status == "done"
    assert worker._suggester.observations == 6  # only the second trial's result came with the task
    worker.close()


def test_while_its_trial_runs_the_worker_wakes_at_the_moment_to_refresh_not_every_poll_before_it(tmp_path):
    """The Refresh goes out at its moment, not up to a poll interval (20 ms) after it, which left the prepared step
    less time than planned; and the worker does not wake every 20 ms before it, only every ABANDON_POLL (0.1 s)."""
    worker, sent = worker_with(tmp_path, {"executor": "process"}, SLOW,
                               [{"strategy": "bayes", "trials": 8, "lookahead": True}])
    worker.can_refresh = True
    calls: list[tuple[float, float | None]] = []  # (when abandon was asked, the moment to refresh then)

    def abandon():
        calls.append((time.monotonic(), None if worker._refresh is None else worker._refresh[0]))
        return worker.refresh() or False

    worker.abandon = abandon
    seen = [({"x": x}, (x - 0.3) ** 2) for x in (0.0, 0.5, 1.0)]
    worker.handle(Task(3, None, 1, "bayes", suggest=(seen, [], 0)))
    calls.clear()
    worker.handle(Task(4, None, 1, "bayes", suggest=([(sent[-2].params, sent[-1].value)], [], 0)))
    assert [type(m) for m in sent[-3:]] == [Suggested, Refresh, Result]
    moment = calls[0][1]
    before = [when for when, _ in calls if when < moment]
    assert moment is not None and 1 <= len(before) <= 4  # a 0.3-s trial: at its start, then at most every 0.1 s
    assert any(when >= moment for when, _ in calls)  # woken at the moment (the Refresh went out then)
    worker.close()


@pytest.mark.parametrize("known", [100, KEEP_POSTERIOR_FROM])
def test_past_a_thousand_points_the_next_step_is_prepared_when_the_trial_starts_and_folded_in_after(tmp_path, known):
    """Under MPI with trials in a child process the step is prepared from the master's Update near the trial's
    end; a trial that ends before the Update comes (shorter than the last, or a busy master) then got the whole
    step. Past KEEP_POSTERIOR_FROM points the worker also prepares it when the trial starts, keeping the
    posterior, and the next step only folds in what came since; below, nothing changes (the quality figures)."""
    worker, sent = worker_with(tmp_path, {"executor": "process"}, SLOW,
                               [{"strategy": "bayes", "trials": 8, "lookahead": True}])
    worker.can_refresh = True  # its Refresh goes unanswered: the trial ends before the Update comes
    worker.abandon = lambda: worker.refresh() or False
    xs = np.random.default_rng(0).random(known)

    def last(kind):
        return [m for m in sent if isinstance(m, kind)][-1]

    worker.handle(Task(3, None, 1, "bayes", suggest=([({"x": x}, (x - 0.3) ** 2) for x in xs.tolist()], [], 0)))
    worker.handle(Task(4, None, 1, "bayes", suggest=([(last(Suggested).params, last(Result).value)], [], 0)))
    assert (last(Result).trial_id, last(Result).status) == (4, "done")
    suggester = worker._suggester
    if known >= KEEP_POSTERIOR_FROM:
        assert suggester.keeps_posterior and worker._lookahead is not None  # started with the trial
        worker._lookahead.join()
        prepared = suggester._prepared
        assert prepared is not None and prepared.kept is not None and prepared.observations == known + 1
        running = last(Suggested).params["x"]  # pending while the step was prepared: its candidates keep away
        assert all(abs(p["x"] - running) >= 0.01 for p in suggester.encoding.decode(prepared.candidates))
    else:
        assert worker._lookahead is None and suggester._prepared is None  # the next step is whole
    folds = []
    fold = suggester._fold_into_kept_posterior
    suggester._fold_into_kept_posterior = lambda *args: folds.append(fold(*args)) or folds[-1]
    worker.handle(Task(5, None, 1, "bayes", suggest=([(last(Suggested).params, last(Result).value)], [], 0)))
    assert (last(Result).trial_id, last(Result).status) == (5, "done") and suggester.observations == known + 2
    assert [f is not None for f in folds] == ([True] if known >= KEEP_POSTERIOR_FROM else [])
    worker.close()
