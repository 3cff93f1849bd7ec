"""What early stopping costs the master per reported epoch. A table, not a test.

    python benchmarks/stopping_cost.py [--trials 10000] [--epochs 100] [--workers 64]

Drives the master's real handling of an ``Epoch`` message (``MasterLoop.handle``: the row for
/epochs, the scheduler's ``EpochReported`` event, the stopping rule, and the ``Verdict`` sent
back, through a comm that drops it) for ``--trials`` trials of up to ``--epochs`` epochs on
``--workers`` simulated workers that report in turn; a trial the rule stops is replaced by the
next. The results file is real and is flushed every 2,000 reports (the master flushes at least
every 0.1 s). Baseline in the same run: the same reports with ``rule = "none"`` (the /epochs row
only). Target of the early-stopping issue: under 50 us per report at 10,000 trials x 100 epochs.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from hpc_hpo.config import parse_config
from hpc_hpo.results.records import RUNNING, TrialRecord
from hpc_hpo.results.writer import ResultsWriter
from hpc_hpo.run.comm import Comm
from hpc_hpo.run.master import MasterLoop
from hpc_hpo.run.options import RunOptions
from hpc_hpo.run.protocol import Epoch, Hello

FLUSH_EVERY = 2000


class DropComm(Comm):
    """Takes the master's messages and drops them; counts the verdicts."""

    def __init__(self, workers: int):
        self.rank, self.size = 0, workers + 1
        self.stops: dict[int, bool] = {}

    def send(self, message, dest: int) -> None:
        if hasattr(message, "stop"):
            self.stops[message.trial_id] = message.stop

    def poll(self):
        return None


def run(rule: str, trials: int, epochs: int, workers: int, directory: Path) -> dict:
    stopping = {"rule": rule}
    if rule != "none":
        stopping.update(metric="val_loss", min_epochs=1, max_epochs=epochs, reduction_factor=3)
    config = parse_config({
        "experiment": {"objective": "m:f", "seed": 1, "results": str(directory / f"{rule}.h5")},
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "phase": [{"strategy": "random", "trials": trials}],
        "stopping": stopping,
    })
    comm = DropComm(workers)
    writer = ResultsWriter.create(config.results_path, config.space, attrs={}, slots=workers, overwrite=True)
    hellos = [Hello(rank, "node", 0) for rank in range(1, workers + 1)]
    loop = MasterLoop(comm, config, writer, hellos, RunOptions(config=config))
    scheduler = loop.scheduler
    rng = np.random.default_rng(0)
    quality = rng.random(trials)  # each trial's final loss; curves of different speeds reach it
    speed = rng.uniform(0.05, 0.5, trials)
    next_trial, reports, seconds = 0, 0, 0.0
    current: dict[int, tuple[int, int]] = {}  # rank -> (trial, next epoch)

    def start(rank: int) -> None:
        nonlocal next_trial
        if next_trial < trials:
            scheduler.running[rank] = TrialRecord(next_trial, RUNNING, {"x": 0.5}, 1, "random", rank, "node", 0.0)
            current[rank] = (next_trial, 0)
            next_trial += 1
        else:
            current.pop(rank, None)
            scheduler.running.pop(rank, None)

    for rank in range(1, workers + 1):
        start(rank)
    now = time.time()
    while current:
        for rank in list(current):
            trial, epoch = current[rank]
            loss = quality[trial] + math.exp(-speed[trial] * (epoch + 1))
            message = Epoch(trial, epoch, {"val_loss": loss, "loss": loss * 0.9}, now)
            started = time.perf_counter()
            loop.handle(rank, message)
            if reports % FLUSH_EVERY == FLUSH_EVERY - 1:
                writer.flush()
            seconds += time.perf_counter() - started
            reports += 1
            if comm.stops.pop(trial, False) or epoch + 1 >= epochs:
                start(rank)
            else:
                current[rank] = (trial, epoch + 1)
    started = time.perf_counter()
    writer.close(0, trials)
    seconds += time.perf_counter() - started
    pruned = sum(1 for t in range(trials) if scheduler.stopping.stopped_at.get(t) is not None)
    return {"rule": rule, "reports": reports, "pruned": pruned, "us_per_report": 1e6 * seconds / reports}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--workers", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(rule, args.trials, args.epochs, args.workers, Path(tmp))
                for rule in ("none", "asha", "hyperband", "median")]
    base = rows[0]["us_per_report"]
    print(f"master cost per reported epoch: {args.trials} trials x up to {args.epochs} epochs, {args.workers} workers "
          f"(two metrics per report, the file flushed every {FLUSH_EVERY} reports)")
    print(f"{'rule':<10} {'reports':>9} {'pruned':>7} {'us/report':>10} {'vs none':>8}")
    for row in rows:
        print(f"{row['rule']:<10} {row['reports']:>9} {row['pruned']:>7} {row['us_per_report']:>10.1f} "
              f"{row['us_per_report'] / base:>7.2f}x")


if __name__ == "__main__":
    main()
