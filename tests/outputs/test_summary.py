"""``status`` of a search still running or killed: busy workers, and whether a job still writes the file."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

from hpc_hpo.outputs.summary import status_text
from hpc_hpo.results.lockfile import ResultsLock, writer_state
from hpc_hpo.results.reader import read_results
from hpc_hpo.results.records import RUNNING, TrialRecord
from hpc_hpo.results.writer import ResultsWriter
from hpc_hpo.search.space import parse_space

from conftest import base_env, hpo, write_experiment
from experiments import OBJECTIVE, experiment

SPACE = parse_space({"x": {"type": "float", "low": 0.0, "high": 1.0}})


def test_a_worker_with_only_a_running_trial_shows_as_busy(tmp_path):
    writer = ResultsWriter.create(tmp_path / "r.h5", SPACE, attrs={"name": "t", "direction": "minimize", "budget": 4},
                                  slots=2)
    writer.start_run(world_size=3, workers=2, host="login1")
    handed_out = time.time()
    writer.set_running(0, TrialRecord(trial_id=0, status=RUNNING, params={"x": 0.5}, phase=1, strategy="random", rank=1,
                                      host="node1", t_submit=handed_out, gpus="0"))
    writer.flush()  # the job goes on: the run row stays open
    text = status_text(read_results(tmp_path / "r.h5"), now=handed_out + 30)
    writer.close(exit_code=0, trials=0)
    assert re.search(r"^ +0 +1 +node1 +0 +30s$", text, re.M), text  # the running table: trial, rank, host, GPU, age
    busy = re.search(r"^ +1 +node1 +1 +(\d+)%$", text, re.M)
    assert busy and int(busy.group(1)) >= 90, text  # busy the whole time since the run started


def test_the_lock_tells_a_running_job_from_a_killed_one_without_taking_it(tmp_path):
    results = tmp_path / "r.h5"
    assert writer_state(results) == "unknown"  # no lock file: a copy of the file, say
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom hpc_hpo.results.lockfile import ResultsLock\n"
                               "ResultsLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)", str(results)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert writer_state(results) == "running"
        ResultsLock(tmp_path / "other.h5").acquire()  # asking did not take the lock: the job still holds it
        assert writer_state(results) == "running"
    finally:
        holder.kill()
        holder.wait()
    assert writer_state(results) == "gone"  # killed: its lock file stays behind, unlocked


def test_status_and_report_say_a_killed_search_was_killed_and_watch_does_not_wait_for_it(tmp_path):
    write_experiment(tmp_path, experiment(trials=200, sleep=0.2, extra_phases=False), OBJECTIVE)
    proc = subprocess.Popen([sys.executable, "-m", "hpc_hpo", "run", "experiment.toml", "-q"], cwd=tmp_path,
                            env=base_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (tmp_path / "results.h5").exists() and read_results(tmp_path / "results.h5").finished_rows >= 3:
                break
            time.sleep(0.1)
        running = hpo(["status", "results.h5"], tmp_path)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert re.search(r"^run 0 .*\(1 workers\), running$", running.stdout, re.M), running.stdout
    killed = hpo(["status", "results.h5", "--watch", "1"], tmp_path, timeout=30)  # returns at once
    assert killed.returncode == 0
    assert re.search(r"^run 0 .*killed \(it did not close the file; recovered by the next --resume\)$", killed.stdout,
                     re.M), killed.stdout
    assert "left" not in killed.stdout  # no time left to promise for a search nobody runs
    report = hpo(["report", "results.h5", "--watch", "1"], tmp_path, timeout=120)
    assert report.returncode == 0 and "the search has ended" in report.stderr
    page = (tmp_path / "results-report" / "report.html").read_text()
    assert "its last job was killed without closing the file" in page and "http-equiv" not in page
