"""Start-up within a deadline: late ranks named with their host and step, another install refused, under a
real mpirun and in one process; a worker whose trial processes stop starting mid-run is retired."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections import deque
from pathlib import Path

import pytest

import hpc_hpo
from hpc_hpo.config import parse_config
from hpc_hpo.errors import ConfigError, StartupTimeoutError
from hpc_hpo.results.reader import read_results
from hpc_hpo.run.comm import Comm
from hpc_hpo.run.protocol import PROTOCOL_VERSION, Hello, Join, Setup
from hpc_hpo.run.startup import start_workers
from hpc_hpo.trials.devices import Place

from conftest import find_mpirun, hpo, launcher_flags, run_command, write_experiment

HOST = os.uname().nodename


class ScriptedComm(Comm):
    """Workers that answer start-up as the test says: ``joins`` and ``hellos`` are the ranks that get that far."""

    def __init__(self, ranks, joins, hellos, version=None, errors=None):
        self.rank, self.size = 0, len(ranks) + 1
        self.inbox = deque()
        self.hellos, self.errors = hellos, errors or {}
        for rank in joins:
            join = Join.of(Place(rank, f"node{rank}", -1, -1, 1))
            self.inbox.append((rank, join._replace(version=version) if version and rank == joins[-1] else join))

    def send(self, message, dest):
        if isinstance(message, Setup) and dest in self.hellos:
            self.inbox.append((dest, Hello(dest, f"node{dest}", 100 + dest, self.errors.get(dest, ""))))

    def poll(self):
        return self.inbox.popleft() if self.inbox else None


def config(timeout: float = 0.5):
    return parse_config({"experiment": {"objective": "m:f", "seed": 1},
                         "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
                         "phase": [{"strategy": "random", "trials": 4}],
                         "workers": {"startup_timeout": timeout}})


def test_every_worker_that_joins_and_says_hello_is_bound_and_started():
    started = start_workers(ScriptedComm([1, 2, 3], joins=[1, 2, 3], hellos=[1, 2, 3]), config())
    assert [h.rank for h in started.hellos] == [1, 2, 3] and sorted(started.bindings) == [1, 2, 3]
    assert [(p.rank, p.node) for p in started.places] == [(0, 0), (1, 1), (2, 2), (3, 3)]  # one host each


def test_ranks_late_at_the_deadline_are_named_with_their_host_and_the_step_they_did_not_finish():
    comm = ScriptedComm([1, 2, 3, 4], joins=[1, 2, 4], hellos=[1, 2, 4])
    with pytest.raises(StartupTimeoutError) as caught:
        start_workers(comm, config(0.5))
    assert str(caught.value) == ("workers.startup_timeout: worker rank 3 (host unknown) did not start (no word from "
                                 "it) within 0.5 s")
    comm = ScriptedComm([1, 2, 3, 4], joins=[1, 2, 3, 4], hellos=[1])
    with pytest.raises(StartupTimeoutError) as caught:
        start_workers(comm, config(0.5))
    assert str(caught.value) == (
        "workers.startup_timeout: worker rank 2 (node2) did not finish importing the objective within 0.5 s "
        "(and 2 more: rank 3 (node3) did not finish importing the objective; rank 4 (node4) did not finish "
        "importing the objective)")


def test_a_rank_of_another_install_is_refused_before_its_join_is_unpickled():
    comm = ScriptedComm([1, 2], joins=[1, 2], hellos=[1, 2], version="0.0.1")
    comm.inbox[-1] = (2, comm.inbox[-1][1]._replace(place=b"\x80\x04not a pickle"))
    with pytest.raises(ConfigError, match=r"^rank 2 on node2 runs hpc_hpo 0.0.1 \(protocol \d+\) but the master runs"):
        start_workers(comm, config())


def test_an_objective_that_cannot_be_loaded_is_one_error_for_all_ranks():
    comm = ScriptedComm([1, 2, 3], joins=[1, 2, 3], hellos=[1, 2, 3],
                        errors={2: "experiment.objective: cannot import 'm:f' on rank 2 (node2)",
                                3: "experiment.objective: cannot import 'm:f' on rank 3 (node3)"})
    with pytest.raises(ConfigError, match=r"^experiment.objective: cannot import 'm:f' on rank 2 \(node2\) \(and 1 "
                                          r"more rank\)$"):
        start_workers(comm, config())


# --- under mpirun and in one process -------------------------------------------------------------------------

HANGS_ON_RANK_2 = """
import os, time

if os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK")) == "2":
    time.sleep(3600)  # a hung NFS mount on this rank's node

def objective(params):
    return params["x"]
"""

EXPERIMENT = """
[experiment]
objective = "objective.py:objective"
results = "results.h5"
seed = 1
[space]
x = { type = "float", low = 0.0, high = 1.0 }
[[phase]]
strategy = "random"
trials = 12
[workers]
executor = "EXECUTOR"
"""


@pytest.mark.parametrize("executor", ["inline", "process"])
def test_a_rank_that_hangs_importing_the_objective_ends_the_job_at_the_deadline(tmp_path, executor):
    write_experiment(tmp_path, EXPERIMENT.replace("EXECUTOR", executor),
                     HANGS_ON_RANK_2.replace('os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK"))',
                                             'os.environ.get("RANK_SEEN")')
                     if executor == "process" else HANGS_ON_RANK_2)
    env = {}
    if executor == "process":  # a trial process does not see the launcher's variables: tell it through its worker's
        (tmp_path / "sitecustomize.py").write_text(
            "import os\nrank = os.environ.get('OMPI_COMM_WORLD_RANK', os.environ.get('PMI_RANK'))\n"
            "if rank:\n    os.environ['RANK_SEEN'] = rank\n")
        env["PYTHONPATH"] = str(tmp_path)
    started = time.monotonic()
    out = hpo(["run", "experiment.toml", "--startup-timeout", "8"], tmp_path, ranks=4, timeout=120, env=env)
    took = time.monotonic() - started
    assert out.returncode == 2, out.output
    errors = [line for line in out.stderr.splitlines() if line.startswith("hpc_hpo: error:")]
    assert errors == [f"hpc_hpo: error: workers.startup_timeout: worker rank 2 ({HOST}) did not finish importing "
                      f"the objective within 8 s"], out.output
    assert "Traceback" not in out.output
    assert not (tmp_path / "results.h5").exists()
    print(f"{executor}: ended {took:.1f} s after launch with an 8 s start-up deadline")


def test_in_one_process_a_hung_import_ends_the_run_at_the_deadline(tmp_path):
    write_experiment(tmp_path, EXPERIMENT.replace("EXECUTOR", "inline"),
                     "import time\ntime.sleep(3600)\n\ndef objective(params):\n    return 0.0\n")
    out = hpo(["run", "experiment.toml", "--startup-timeout", "3"], tmp_path, timeout=60)
    assert out.returncode == 2, out.output
    assert out.stderr.strip().splitlines()[-1] == (f"hpc_hpo: error: workers.startup_timeout: worker rank 0 ({HOST}) "
                                                    f"did not finish importing the objective within 3 s")


SICK_AFTER_ONE_TRIAL = """
import os, time

# Rank 2's node goes bad after its first trial: every trial process it starts later hangs while importing.
MARK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sick-%d" % os.getppid())
if os.path.exists(MARK):
    time.sleep(3600)

def objective(params, trial):
    if trial.rank == 2:
        open(MARK, "w").close()
    time.sleep(0.2)
    return params["x"]
"""


def test_a_worker_whose_trial_processes_stop_starting_is_retired_and_the_search_finishes(tmp_path):
    # Enough trials that rank 1 still has work when rank 2 retires (its three hung starts take 2 s each, while
    # rank 1's next trial process loads during its trial).
    body = EXPERIMENT.replace("EXECUTOR", "process").replace("trials = 12", "trials = 60") + \
        "max_trials_per_process = 1\nstartup_timeout = 2\n"
    write_experiment(tmp_path, body, SICK_AFTER_ONE_TRIAL)
    out = hpo(["run", "experiment.toml"], tmp_path, ranks=3, timeout=240)
    assert out.returncode == 0, out.output
    rows = read_results(tmp_path / "results.h5").records()
    assert len(rows) == 60
    sick = [r for r in rows if r["rank"] == 2]
    assert [r["status"] for r in sick] == ["done", "failed", "failed", "failed"]
    assert all(r["error"].startswith("TrialProcessStartTimeout: the trial process did not finish importing the "
                                     "objective within 2 s") for r in sick[1:])
    assert all(r["status"] == "done" for r in rows if r["rank"] == 1)
    assert f"worker rank 2 ({HOST}) retired: its trial process failed to start 3 times in a row" in out.stderr
    assert "the search goes on with 1 worker" in out.stderr


def test_a_worker_of_another_install_gets_one_line_on_every_rank(tmp_path):
    """One rank runs a copy of hpc_hpo whose version differs and whose config classes were renamed: it must
    be refused by its version, before anything that needs those classes is unpickled."""
    other = tmp_path / "other"
    shutil.copytree(Path(hpc_hpo.__file__).parent, other / "hpc_hpo", ignore=shutil.ignore_patterns("__pycache__"))
    version = other / "hpc_hpo" / "_version.py"
    version.write_text(version.read_text().replace(f'"{hpc_hpo.__version__}"', '"0.0.1+other"'))
    for module in (other / "hpc_hpo").glob("*.py"):
        module.write_text(module.read_text().replace("WorkersConfig", "WorkerSettings"))
    write_experiment(tmp_path, EXPERIMENT.replace("EXECUTOR", "inline"), "def objective(params):\n    return 0.0\n")
    ours = [sys.executable, "-m", "hpc_hpo", "run", "experiment.toml"]
    command = [find_mpirun(), *launcher_flags(), "-n", "2", *ours, ":",
               "-n", "1", "env", f"PYTHONPATH={other}", *ours]
    out = run_command(command, tmp_path, timeout=120)
    assert out.returncode == 2, out.output
    errors = [line for line in out.stderr.splitlines() if line.startswith("hpc_hpo: error:")]
    assert errors == [f"hpc_hpo: error: rank 2 on {HOST} runs hpc_hpo 0.0.1+other (protocol {PROTOCOL_VERSION}) but "
                      f"the master runs {hpc_hpo.__version__} (protocol {PROTOCOL_VERSION}); install one version "
                      f"everywhere"], out.output
    assert "Traceback" not in out.output and not (tmp_path / "results.h5").exists()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v", "-s"]))
