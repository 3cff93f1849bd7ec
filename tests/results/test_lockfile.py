"""The results file's lock: one job at a time, a stale lock taken over, readers never disturb a job."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

from hpc_hpo.errors import StoreError
from hpc_hpo.results.lockfile import ResultsLock, lock_path, writer_state


def _contend(results: str, marker: str, rounds: int, start, overlaps) -> None:
    """Take and release the lock ``rounds`` times; while holding it, be the only one to hold ``marker``."""
    lock = ResultsLock(results)
    start.wait()
    taken = 0
    while taken < rounds:
        try:
            lock.acquire()
        except StoreError:
            continue  # held by another contender: try again at once
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            with overlaps.get_lock():
                overlaps.value += 1  # two contenders hold the lock at once
        else:
            os.close(fd)
            os.unlink(marker)
        lock.release()
        taken += 1


def test_processes_racing_for_the_lock_never_hold_it_together(tmp_path):
    """The lock file is removed at release; a contender that opened the old file before must not hold
    the lock on it while a third one locks the new file (found by a review: two masters, one file)."""
    ctx = multiprocessing.get_context("fork")
    start, overlaps = ctx.Event(), ctx.Value("i", 0)
    results, marker = str(tmp_path / "results.h5"), str(tmp_path / "held")
    contenders = [ctx.Process(target=_contend, args=(results, marker, 400, start, overlaps)) for _ in range(4)]
    for process in contenders:
        process.start()
    start.set()
    for process in contenders:
        process.join(120)
        assert process.exitcode == 0, "a contender died or hung"
    assert overlaps.value == 0, f"two processes held the lock at once {overlaps.value} times in 1,600 rounds"
    assert not lock_path(results).exists()  # released cleanly: nothing left behind


def _in_another_process(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter. POSIX locks belong to a process, and closing any descriptor of the
    lock file drops them: a test must look at a lock it holds from another process, never open the file itself."""
    return subprocess.run([sys.executable, "-c", "from hpc_hpo.results.lockfile import *\n" + code], capture_output=True,
                          text=True)


def test_a_second_holder_is_refused_with_the_holder_named(tmp_path):
    results = tmp_path / "results.h5"
    with ResultsLock(results):
        shown = _in_another_process(f"print(lock_path({str(results)!r}).read_text())")
        holder = json.loads(shown.stdout)
        assert holder["pid"] == os.getpid() and holder["host"] == os.uname().nodename
        assert _in_another_process(f"print(writer_state({str(results)!r}))").stdout.strip() == "running"
        second = _in_another_process(f"ResultsLock({str(results)!r}).acquire()")
        assert second.returncode != 0
        assert f"{results}: in use by another run (pid {os.getpid()} on {os.uname().nodename}" in second.stderr
    assert writer_state(results) == "unknown"  # released: the lock file is gone


def test_a_lock_left_by_a_killed_process_is_stale_and_taken_over(tmp_path, caplog):
    results = tmp_path / "results.h5"
    killed = _in_another_process(f"import os\nResultsLock({str(results)!r}).acquire()\nos._exit(9)")
    assert killed.returncode == 9
    assert writer_state(results) == "gone"  # the file is there, nobody holds it: its job was killed
    with ResultsLock(results):
        assert _in_another_process(f"print(writer_state({str(results)!r}))").stdout.strip() == "running"
    assert "taking over a stale lock (pid" in caplog.text


def test_the_lock_path_sits_beside_the_results_file():
    assert lock_path("/scratch/me/run.h5") == Path("/scratch/me/run.h5.lock")
