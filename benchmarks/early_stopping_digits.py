"""ASHA on a real Keras model: the built-in digits MLP, best validation accuracy against training time. A table.

    python benchmarks/early_stopping_digits.py [--seeds 3] [--trials 40]

Random search over the built-in default experiment's space (``hpc_hpo.examples.digits_mlp``),
``--trials`` trials of up to 27 epochs, 8 workers under real ``mpirun -n 9 --oversubscribe``
(TensorFlow in a trial process per worker), with and without ``[stopping] rule = "asha"`` on
``val_accuracy`` (min 1, max 27 epochs, eta 3). Per run: total training time (the sum of the
trials' durations: what a GPU allocation pays), the job's wall time, epochs trained, and the best
validation accuracy among the trials that ran to the end. Needs TensorFlow (``scripts/setup.sh``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _mpi import mpi_env, mpirun  # noqa: E402

from hpc_hpo.results.reader import read_results  # noqa: E402

SPACE = """
learning_rate = { type = "float", low = 1e-4, high = 1e-1, log = true }
units         = { type = "int", low = 16, high = 256, log = true }
dropout       = { type = "float", low = 0.0, high = 0.5 }
batch_size    = { type = "categorical", choices = [32, 64, 128, 256] }
activation    = { type = "categorical", choices = ["relu", "tanh", "elu"] }
epochs        = { type = "fixed", value = 27 }
"""


def run(stopping: bool, seed: int, trials: int, cwd: Path) -> dict:
    name = f"digits-{'asha' if stopping else 'none'}-{seed}"
    table = textwrap.dedent("""
        [stopping]
        rule = "asha"
        metric = "val_accuracy"
        min_epochs = 1
        max_epochs = 27
        reduction_factor = 3
        """) if stopping else ""
    path = cwd / f"{name}.toml"
    path.write_text(textwrap.dedent(f"""
        [experiment]
        objective = "hpc_hpo.examples.digits_mlp:objective"
        direction = "maximize"
        results = "{name}.h5"
        seed = {seed}
        [space]
        """) + SPACE + f'\n[[phase]]\nstrategy = "random"\ntrials = {trials}\n[workers]\nexecutor = "process"\n'
        + "max_trials_per_process = 100\n" + table)
    started = time.monotonic()
    done = subprocess.run([mpirun(), "-n", "9", "--oversubscribe", "--bind-to", "none", sys.executable, "-m", "hpc_hpo",
                           "run", str(path), "--overwrite", "-q"], cwd=cwd, env=mpi_env(), capture_output=True, text=True,
                          timeout=7200)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"failed: {name}\n{done.stderr}")
    rows = read_results(cwd / f"{name}.h5").records()
    ended = [r for r in rows if r["status"] == "done" and r["epochs"] >= 27]
    return {"train_seconds": sum(r["t_end"] - r["t_start"] for r in rows), "wall": wall,
            "epochs": sum(r["epochs"] for r in rows), "best": max(r["value"] for r in ended), "ended": len(ended)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=40)
    args = parser.parse_args()
    rows: dict[str, list[dict]] = {"no stopping": [], "asha": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for label, stopping in (("no stopping", False), ("asha", True)):
                rows[label].append(run(stopping, seed, args.trials, Path(tmp)))
                print(f"  {label} seed {seed}: {rows[label][-1]}", file=sys.stderr)
    print(f"digits MLP, {args.trials} random trials of up to 27 epochs, 8 workers (mpirun -n 9 on this machine), "
          f"{args.seeds} seeds; medians")
    print(f"{'search':<14} {'training time':>14} {'of none':>8} {'wall':>8} {'epochs':>7} {'best val acc':>13} "
          f"{'ran to 27':>10}")
    base = statistics.median(r["train_seconds"] for r in rows["no stopping"])
    for label, runs in rows.items():
        train = statistics.median(r["train_seconds"] for r in runs)
        print(f"{label:<14} {train:>13.0f}s {train / base:>8.2f} {statistics.median(r['wall'] for r in runs):>7.0f}s "
              f"{statistics.median(r['epochs'] for r in runs):>7.0f} "
              f"{statistics.median(r['best'] for r in runs):>13.4f} {statistics.median(r['ended'] for r in runs):>10.0f}")
        bests = ", ".join(format(r["best"], ".4f") for r in runs)
        print(f"{'':<14} per seed best: {bests}")


if __name__ == "__main__":
    main()
