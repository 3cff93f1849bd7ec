"""What a supervised trial process costs per trial, against calling the objective inline. A table, not a test.

    python benchmarks/executor_overhead.py [--trials 2000]

Runs a null objective (returns at once) through InlineExecutor and ProcessExecutor in this
process, no MPI, and reports the median time per trial and the time to start a trial process
(spawn + import of hpc_hpo + the objective). The process executor's cost per trial is a
pickled round trip over a pipe plus the per-trial stdout/stderr files. With TensorFlow each new
process (every ``max_trials_per_process`` trials) imports it, which takes seconds, but while the trial
before runs (the successor starts with its predecessor's last planned trial).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from hpc_hpo.trials.executor import InlineExecutor, ProcessExecutor
from hpc_hpo.trials.objective import TrialContext

NULL = "def objective(params):\n    return params['x']\n"


def per_trial(executor, trials: int, root: str) -> float:
    times = []
    for i in range(trials):
        context = TrialContext(i, {}, 1, "h", 1, "random", "bench", workdir_root=root)
        started = time.perf_counter()
        executor.run({"x": 1.0}, context)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "null.py").write_text(NULL)
        spec, root = f"{tmp}/null.py:objective", f"{tmp}/trials"
        inline = per_trial(InlineExecutor(spec, tmp), args.trials, root)
        started = time.perf_counter()
        executor = ProcessExecutor(spec, tmp, max_trials_per_process=args.trials + 1)
        startup = time.perf_counter() - started
        process = per_trial(executor, args.trials, root)
        executor.close()
    print(f"{'executor':<10} {'per trial':>12} {'ratio':>8}")
    print(f"{'inline':<10} {inline * 1e6:>9.1f} us {1.0:>7.1f}x")
    print(f"{'process':<10} {process * 1e6:>9.1f} us {process / inline:>7.1f}x")
    print(f"starting a trial process (spawn, import hpc_hpo and the objective): {startup * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
