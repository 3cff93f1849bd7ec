"""How much does hpc_hpo cost per trial, next to raw MPI? Prints a table; not a pass/fail test.

    python benchmarks/dispatch.py                  # 8 workers (mpirun -n 9), 5,000 trials, 3 repeats
    python benchmarks/dispatch.py --sweep 3 5 9    # the same at other rank counts

Measured in the same run, alternating, medians of ``--repeat`` runs:
  * raw:      a minimal mpi4py send/recv master/worker loop (the ceiling for any Python layer);
  * futures:  mpi4py.futures' MPIPoolExecutor, for reference;
  * hpc_hpo:  `python -m hpc_hpo run` with a null objective, random search, every result written
              to the HDF5 file (trials per second from the file's /runs row: its loop_seconds run from
              the run's start until the last buffered row was written, so every result is counted stored);
  * idle CPU: the master's CPU while 8 workers each sleep 1 s per trial.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import h5py
import numpy as np

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def mpirun(ranks: int, args: list[str], cwd: Path) -> str:
    launcher = str(BIN / "mpirun") if (BIN / "mpirun").exists() else shutil.which("mpirun")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    cmd = [launcher, "-n", str(ranks), "--oversubscribe", sys.executable, *args]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stdout}\n{done.stderr}")
    return done.stdout


def experiment(directory: Path, name: str, objective: str, trials: int, sleep: float | None = None) -> Path:
    fixed = f"sleep = {{ type = \"fixed\", value = {sleep} }}" if sleep is not None else ""
    path = directory / f"{name}.toml"
    path.write_text(textwrap.dedent(f"""
        [experiment]
        name = "{name}"
        objective = "{HERE / 'objectives.py'}:{objective}"
        results = "{name}.h5"
        seed = 1

        [space]
        x = {{ type = "float", low = 0.0, high = 1.0 }}
        y = {{ type = "float", low = 0.0, high = 1.0 }}
        {fixed}

        [[phase]]
        strategy = "random"
        trials = {trials}
    """))
    return path


def last_run(results: Path, expected_trials: int) -> np.void:
    with h5py.File(results, "r") as f:
        ids = f["trials"]["trial_id"][:]
        if sorted(ids.tolist()) != list(range(expected_trials)):
            raise SystemExit(f"{results}: expected trials 0..{expected_trials - 1} once each, got {len(ids)} rows")
        return f["runs"][-1]


def raw_rate(ranks: int, trials: int, cwd: Path) -> float:
    return json.loads(mpirun(ranks, [str(HERE / "_raw_roundtrip.py"), str(trials)], cwd).strip().splitlines()[-1])["rate"]


def futures_rate(ranks: int, trials: int, cwd: Path) -> float:
    out = mpirun(ranks, ["-m", "mpi4py.futures", str(HERE / "_futures.py"), str(trials)], cwd)
    return json.loads(out.strip().splitlines()[-1])["rate"]


def hpc_hpo_rate(ranks: int, trials: int, cwd: Path) -> float:
    config = experiment(cwd, "null", "null", trials)
    mpirun(ranks, ["-m", "hpc_hpo", "run", str(config), "--overwrite", "-q"], cwd)
    run = last_run(cwd / "null.h5", trials)
    return float(run["trials"] / run["loop_seconds"])


def idle_cpu(ranks: int, rounds: int, cwd: Path) -> tuple[float, float]:
    """Master CPU (% of one core) and loop seconds while every worker sleeps 1 s per trial."""
    trials = (ranks - 1) * rounds
    config = experiment(cwd, "sleep", "sleep", trials, sleep=1.0)
    mpirun(ranks, ["-m", "hpc_hpo", "run", str(config), "--overwrite", "-q"], cwd)
    run = last_run(cwd / "sleep.h5", trials)
    return 100.0 * run["master_cpu_seconds"] / run["loop_seconds"], float(run["loop_seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=5000, help="trials per dispatch run (default 5000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each kind; the table shows medians")
    parser.add_argument("--sweep", type=int, nargs="*", default=[9], metavar="RANKS", help="rank counts (default 9)")
    parser.add_argument("--rounds", type=int, default=5, help="1-second trials per worker in the idle-CPU run")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        print(f"dispatch: null objective, random search, {args.trials} trials, medians of {args.repeat} runs, "
              f"{os.cpu_count()} cores, mpirun --oversubscribe")
        print(f"{'ranks':>5} {'raw mpi4py/s':>13} {'futures/s':>10} {'hpc_hpo/s':>10} {'hpc_hpo/raw':>12} "
              f"{'hpc_hpo/futures':>16}")
        for ranks in args.sweep:
            rates: dict[str, list[float]] = {"raw": [], "futures": [], "hpc_hpo": []}
            for _ in range(args.repeat):  # alternate, so that noise on the machine hits all three alike
                rates["raw"].append(raw_rate(ranks, args.trials, cwd))
                rates["futures"].append(futures_rate(ranks, args.trials, cwd))
                rates["hpc_hpo"].append(hpc_hpo_rate(ranks, args.trials, cwd))
            raw, fut, ours = (statistics.median(rates[k]) for k in ("raw", "futures", "hpc_hpo"))
            print(f"{ranks:>5} {raw:>13,.0f} {fut:>10,.0f} {ours:>10,.0f} {ours / raw:>12.2f} {ours / fut:>16.2f}",
                  flush=True)
        ranks = max(args.sweep)
        cpu, seconds = idle_cpu(ranks, args.rounds, cwd)
        print(f"master CPU while {ranks - 1} workers sleep 1 s per trial: {cpu:.1f}% of one core "
              f"({seconds:.2f} s for {args.rounds} rounds; ideal {args.rounds} s)")


if __name__ == "__main__":
    main()
