"""``status`` on a file whose trials are still running: the workers busy with them count as busy."""

from __future__ import annotations

import re
import time

from hpc_hpo.records import RUNNING, TrialRecord
from hpc_hpo.space import parse_space
from hpc_hpo.store import ResultsWriter, read_results
from hpc_hpo.summary import status_text

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
    writer.close(exit_code=0, trials=0, loop_seconds=1.0, master_cpu_seconds=0.0)
    assert re.search(r"^ +0 +1 +node1 +0 +30s$", text, re.M), text  # the running table: trial, rank, host, GPU, age
    busy = re.search(r"^ +1 +node1 +1 +(\d+)%$", text, re.M)
    assert busy and int(busy.group(1)) >= 90, text  # busy the whole time since the run started
