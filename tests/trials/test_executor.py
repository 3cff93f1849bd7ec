"""The supervised trial process: reuse, timeout, crashes, memory bound, output files, auto choice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hpc_hpo.errors import ObjectiveImportError, StartupTimeoutError
from hpc_hpo.trials.executor import InlineExecutor, ProcessExecutor, choose_executor
from hpc_hpo.trials.objective import TrialContext

OBJECTIVE = """
import os, sys, time, ctypes

HOARD = []

def objective(params, trial):
    mode = params["mode"]
    print("stdout of trial", trial.trial_id)
    print("about to", mode, file=sys.stderr)
    if mode == "sleep":
        time.sleep(60)
    elif mode == "polite":  # stops when asked, as the Keras callback of hpc_hpo.tf does
        while not trial.should_stop():
            time.sleep(0.01)
        return {"value": 1.0, "pid": os.getpid()}
    elif mode == "segfault":
        ctypes.string_at(0)
    elif mode == "exit":
        os._exit(3)
    elif mode == "raise":
        raise ValueError("bad luck")
    elif mode == "hoard":
        HOARD.append(bytearray(300 * 2**20))
        for i in range(300 * 2**20 // 4096):
            HOARD[-1][i * 4096] = 1
    elif mode == "epochs":
        for epoch in range(3):
            trial.report(epoch, {"loss": 1.0 / (epoch + 1), "note": "not a number"})
    elif mode == "stoppable":  # trains until the verdict on a report says stop
        for epoch in range(10):
            trial.report(epoch, {"val_loss": 1.0 / (epoch + 1)})
            if trial.should_stop():
                return {"value": float(epoch), "pid": os.getpid()}
    return {"value": float(os.getpid()), "pid": os.getpid()}
"""


@pytest.fixture
def objective_file(tmp_path: Path) -> Path:
    path = tmp_path / "objective.py"
    path.write_text(textwrap.dedent(OBJECTIVE))
    return path


def context(tmp_path: Path, trial_id: int) -> TrialContext:
    return TrialContext(trial_id=trial_id, params={}, rank=1, host="node1", phase=1, strategy="explicit",
                        experiment="t", workdir_root=str(tmp_path / "trials"))


@pytest.fixture
def make(objective_file, tmp_path):
    executors = []

    def factory(**kwargs) -> ProcessExecutor:
        executor = ProcessExecutor(f"{objective_file}:objective", str(tmp_path), **kwargs)
        executors.append(executor)
        return executor

    yield factory
    for executor in executors:
        executor.close()


def run(executor, tmp_path, trial_id, mode, report=None):
    return executor.run({"mode": mode}, context(tmp_path, trial_id), report)


def test_one_process_serves_several_trials_then_is_replaced(make, tmp_path):
    executor = make(max_trials_per_process=3)
    pids = [run(executor, tmp_path, i, "ok").metrics["pid"] for i in range(5)]
    assert pids[0] == pids[1] == pids[2] != pids[3] == pids[4]
    assert pids[0] != os.getpid()


#: An objective whose import takes a second, as TensorFlow's takes seconds.
SLOW_IMPORT = """
import os, time

time.sleep(1.0)
LOADED = time.time()

def objective(params, trial):
    if params.get("crash"):
        os._exit(3)
    time.sleep(params["seconds"])
    return {"value": 0.0, "pid": os.getpid(), "loaded": LOADED}
"""


def test_the_next_trial_process_loads_while_the_last_trial_of_the_one_before_runs(tmp_path):
    """Every ``max_trials_per_process`` trials a new child imports the objective (TensorFlow: seconds): it does so
    during the last trial of the child before, not while the worker waits."""
    (tmp_path / "slow_import.py").write_text(SLOW_IMPORT)
    executor = ProcessExecutor(f"{tmp_path / 'slow_import.py'}:objective", str(tmp_path), max_trials_per_process=2)
    try:
        first = executor.run({"seconds": 0.0}, context(tmp_path, 0))
        last = executor.run({"seconds": 3.0}, context(tmp_path, 1))  # the first child's last trial
        ended = time.time()
        after = executor.run({"seconds": 0.0}, context(tmp_path, 2))
        assert first.metrics["pid"] == last.metrics["pid"] != after.metrics["pid"]
        assert after.metrics["loaded"] < ended  # loaded during the trial before
    finally:
        executor.close()


def test_a_trial_starts_when_its_trial_process_has_loaded_the_objective(tmp_path):
    """After a crash the replacement loads first: that wait is not the next trial's time (the row's t_start)."""
    (tmp_path / "slow_import.py").write_text(SLOW_IMPORT)
    executor = ProcessExecutor(f"{tmp_path / 'slow_import.py'}:objective", str(tmp_path))
    try:
        assert executor.run({"crash": True}, context(tmp_path, 0)).status == "failed"
        asked = time.time()
        outcome = executor.run({"seconds": 0.0}, context(tmp_path, 1))
        assert outcome.status == "done"
        assert executor.started >= outcome.metrics["loaded"] and executor.started - asked > 0.5
    finally:
        executor.close()


def test_a_trial_past_its_timeout_is_killed_and_the_next_one_runs(make, tmp_path):
    executor = make(trial_timeout=1.0)
    started = time.monotonic()
    outcome = run(executor, tmp_path, 0, "sleep")
    assert time.monotonic() - started < 60  # cut short: the trial itself sleeps 60 s
    assert outcome.status == "timeout" and outcome.value is None
    assert outcome.error.startswith("TrialTimeout: ran longer than workers.trial_timeout = 1 s (rank 1 on node1)")
    assert run(executor, tmp_path, 1, "ok").status == "done"


def test_a_trial_that_stops_when_asked_is_still_a_timeout(make, tmp_path):
    executor = make(trial_timeout=0.5)
    first = run(executor, tmp_path, 0, "polite")
    second = run(executor, tmp_path, 1, "ok")
    assert first.status == "timeout"
    assert second.metrics["pid"] == first.metrics["pid"]  # it stopped cleanly: the process lives on


def test_a_segfault_is_a_failed_row_with_the_signal_and_stderr(make, tmp_path):
    executor = make()
    outcome = run(executor, tmp_path, 0, "segfault")
    assert outcome.status == "failed"
    assert "the trial process was killed by signal 11 (SIGSEGV) (rank 1 on node1)" in outcome.error
    assert outcome.error.endswith("last lines of stderr:\nabout to segfault")
    assert run(executor, tmp_path, 1, "ok").status == "done"


def test_os_exit_is_a_failed_row_with_the_exit_code(make, tmp_path):
    executor = make()
    outcome = run(executor, tmp_path, 0, "exit")
    assert outcome.status == "failed" and "exited with code 3" in outcome.error
    assert run(executor, tmp_path, 1, "ok").status == "done"


def test_a_raising_trial_keeps_its_process_and_ends_with_its_stderr(make, tmp_path):
    executor = make()
    outcome = run(executor, tmp_path, 0, "raise")
    assert outcome.status == "failed" and outcome.error.startswith("ValueError: bad luck (rank 1 on node1)")
    assert "last lines of stderr:\nabout to raise" in outcome.error
    trial_dir = tmp_path / "trials" / "trial_000000"
    assert (trial_dir / "stdout.txt").read_text() == "stdout of trial 0\n"
    assert (trial_dir / "stderr.txt").read_text() == "about to raise\n"


def test_a_process_over_its_memory_bound_is_replaced(make, tmp_path):
    executor = make(max_process_memory_mb=200)
    hoarder = run(executor, tmp_path, 0, "hoard")
    assert hoarder.memory_mb > 300
    after = run(executor, tmp_path, 1, "ok")
    assert after.metrics["pid"] != hoarder.metrics["pid"] and after.memory_mb < 200


def test_epoch_reports_reach_the_worker_and_skip_what_is_not_a_number(make, tmp_path):
    reports = []
    outcome = run(make(), tmp_path, 0, "epochs", report=lambda epoch, metrics: reports.append((epoch, metrics)))
    assert outcome.status == "done"
    assert reports == [(0, {"loss": 1.0}), (1, {"loss": 0.5}), (2, {"loss": 1 / 3})]


@pytest.mark.parametrize("kind", ["process", "inline"])
def test_a_stop_verdict_on_a_report_is_seen_by_should_stop_right_after_it(make, objective_file, tmp_path, kind):
    executor = make() if kind == "process" else InlineExecutor(f"{objective_file}:objective", str(tmp_path))
    seen = []

    def report(epoch, metrics):  # the worker's side: the stopping rule's verdict on this report
        seen.append(epoch)
        return epoch == 2

    outcome = run(executor, tmp_path, 0, "stoppable", report=report)
    assert outcome.status == "done" and outcome.value == 2.0 and seen == [0, 1, 2]
    again = run(executor, tmp_path, 1, "stoppable", report=lambda epoch, metrics: False)  # the flag does not linger
    assert again.value == again.metrics["pid"]  # it ran all 10 epochs: the mode returns its pid when never stopped


HANGS_WHEN_MARKED = """
import os, time

if os.path.exists(os.path.join(os.path.dirname(os.path.abspath(__file__)), "hang")):
    time.sleep(3600)  # a file system or GPU driver that no longer answers

def objective(params):
    return 1.0
"""


def test_a_first_trial_process_that_hangs_while_importing_is_a_start_up_timeout(tmp_path):
    (tmp_path / "slow.py").write_text(HANGS_WHEN_MARKED)
    (tmp_path / "hang").touch()
    with pytest.raises(StartupTimeoutError, match=r"^TrialProcessStartTimeout: the trial process did not finish "
                                                  r"importing the objective within 1 s \(workers.startup_timeout\)$"):
        ProcessExecutor(f"{tmp_path / 'slow.py'}:objective", str(tmp_path), startup_timeout=1.0)


def test_a_later_trial_process_that_hangs_fails_its_trial_and_counts_until_one_starts(tmp_path):
    (tmp_path / "slow.py").write_text(HANGS_WHEN_MARKED)
    # a start that does not hang may take seconds on a busy machine: the short limit only while they hang
    executor = ProcessExecutor(f"{tmp_path / 'slow.py'}:objective", str(tmp_path), max_trials_per_process=1,
                               startup_timeout=60.0)
    try:
        assert executor.run({}, context(tmp_path, 0)).status == "done"  # its replacement starts loading now
        (tmp_path / "hang").touch()
        executor.startup_timeout = 1.0
        executor._retire()  # a replacement started after the mark: it hangs
        outcomes = [executor.run({}, context(tmp_path, i)) for i in (1, 2)]
        assert [o.status for o in outcomes] == ["failed", "failed"] and executor.start_failures == 2
        assert outcomes[0].error == ("TrialProcessStartTimeout: the trial process did not finish importing the "
                                     "objective within 1 s (workers.startup_timeout) (rank 1 on node1)")
        (tmp_path / "hang").unlink()
        executor.startup_timeout = 60.0
        executor._retire()
        assert executor.run({}, context(tmp_path, 3)).status == "done" and executor.start_failures == 0
    finally:
        executor.close()


def test_an_objective_that_cannot_be_imported_is_reported_from_the_child(tmp_path):
    (tmp_path / "broken.py").write_text("import no_such_module_here\n")
    with pytest.raises(ObjectiveImportError, match="no_such_module_here"):
        ProcessExecutor(f"{tmp_path / 'broken.py'}:objective", str(tmp_path))


def test_the_trial_process_dies_with_its_worker(objective_file, tmp_path):
    """kill -9 of a worker must not leave its trial process behind (it would hold a GPU)."""
    script = textwrap.dedent(f"""
        import sys
        from hpc_hpo.trials.executor import ProcessExecutor
        from hpc_hpo.trials.objective import TrialContext
        executor = ProcessExecutor({f"{objective_file}:objective"!r}, {str(tmp_path)!r})
        print(executor._child.process.pid, flush=True)
        executor.run({{"mode": "sleep"}}, TrialContext(0, {{}}, 1, "h", 1, "explicit", "t",
                                                      workdir_root={str(tmp_path / "trials")!r}))
    """)
    worker = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        child = int(worker.stdout.readline())
        os.kill(child, 0)  # alive
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{child}").exists() and \
                "Z" not in Path(f"/proc/{child}/stat").read_text().split()[2]:
            time.sleep(0.05)
        assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
    finally:
        worker.kill()


def test_inline_runs_in_this_process(objective_file, tmp_path):
    outcome = InlineExecutor(f"{objective_file}:objective", str(tmp_path)).run({"mode": "ok"}, context(tmp_path, 0))
    assert outcome.metrics["pid"] == os.getpid() and outcome.memory_mb > 0


def test_auto_picks_a_process_for_deep_learning_objectives_without_importing_them(tmp_path):
    (tmp_path / "keras_obj.py").write_text("def f(p):\n    from tensorflow import keras\n    return 1.0\n")
    (tmp_path / "torch_obj.py").write_text("import torch.nn as nn\ndef f(p):\n    return 1.0\n")
    (tmp_path / "plain.py").write_text("import math\ndef f(p):\n    return 1.0\n")
    assert choose_executor("auto", "keras_obj.py:f", str(tmp_path)) == "process"
    assert choose_executor("auto", "torch_obj.py:f", str(tmp_path)) == "process"
    assert choose_executor("auto", "plain.py:f", str(tmp_path)) == "inline"
    assert choose_executor("auto", "hpc_hpo.examples.digits_mlp:objective", ".") == "process"
    assert choose_executor("auto", "light_objectives:griewank", ".") == "inline"
    assert choose_executor("inline", "keras_obj.py:f", str(tmp_path)) == "inline"
    imported = subprocess.run([sys.executable, "-c", "import sys; from hpc_hpo.trials.executor import choose_executor; "
                               "choose_executor('auto', 'hpc_hpo.examples.digits_mlp:objective', '.'); "
                               "print('tensorflow' in sys.modules)"], capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "False"
