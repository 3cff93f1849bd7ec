"""Population Based Training: quality at equal epochs, against random search and Ray Tune's PBT. Prints tables.

    python benchmarks/pbt.py toy [--seeds 10] [--peers]   # the toy: pbt vs random search (+ Ray Tune's PBT)
    python benchmarks/pbt.py digits [--seeds 3]           # Keras digits MLP: pbt vs random; pb2 vs pbt, 4 members
    python benchmarks/pbt.py overhead                     # an exploit's cost against saving the checkpoint
    python benchmarks/pbt.py all --save pbt.json          # everything; --load pbt.json prints saved tables

The toy (``light_objectives.pbt_toy``): the loss falls by ``loss * lr`` per epoch but settles at ``lr ** 2``, so
a large learning rate is best early and a small one late, and no fixed learning rate reaches what a falling
schedule does (the greedy schedule ends at about 0.048 after 80 epochs; the best fixed one at 0.068). Its state
(the loss) lives in the checkpoint. 8 members, an exploit/explore step every 4 epochs, 80 epochs each; random
search gets the same 640 epochs (8 trials of 80). Ours run under real ``mpirun -n 9 --oversubscribe`` with 8
workers; Ray Tune's PopulationBasedTraining gets the same toy, population, interval, epochs, quantile,
resample probability and perturbation factors, 8 concurrent trials on the same 2 cores (``pip install -e
'.[bench]'``), reporting (with a checkpoint) once per interval, its cheapest use (once per epoch it took 0.4 s
per report here). Every epoch sleeps ``--delay`` seconds in both, standing in for training.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
sys.path[:0] = [str(HERE), str(TESTS)]

from _mpi import mpi_env, mpirun  # noqa: E402

from hpc_hpo.results.reader import read_results  # noqa: E402

from light_objectives import toy_step  # noqa: E402

MEMBERS, INTERVAL, EPOCHS, WORKERS = 8, 4, 80, 8
QUANTILE, RESAMPLE, FACTORS = 0.25, 0.25, (0.8, 1.2)
LR = (1e-3, 1.0)


def toy_best_fixed() -> tuple[float, float]:
    """(loss, lr) of the best fixed learning rate after EPOCHS epochs (a fine log grid)."""
    best = (math.inf, 0.0)
    for i in range(2001):
        lr = LR[0] * (LR[1] / LR[0]) ** (i / 2000)
        loss = 1.0
        for _ in range(EPOCHS):
            loss = toy_step(loss, lr)
        best = min(best, (loss, lr))
    return best


def toy_greedy() -> float:
    """The loss after EPOCHS epochs of the per-epoch greedy schedule (lr = loss / 2)."""
    loss = 1.0
    for _ in range(EPOCHS):
        loss = toy_step(loss, min(LR[1], max(LR[0], loss / 2)))
    return loss


# --- ours ------------------------------------------------------------------------------------------------


def _experiment(objective: str, space: str, phase: str, seed: int, direction: str = "minimize",
                executor: str = "inline") -> str:
    return textwrap.dedent(f"""\
        [experiment]
        objective = "{objective}"
        direction = "{direction}"
        results = "results.h5"
        seed = {seed}
        max_initial_failures = 0
        [space]
        """) + textwrap.dedent(space) + "\n" + textwrap.dedent(phase) + f'\n[workers]\nexecutor = "{executor}"\n'


def run_ours(text: str, workers: int, timeout: float = 3600, last_metric: str = "") -> tuple[list[dict], float]:
    """Run an experiment under ``mpirun -n workers+1``; (its rows, wall seconds of the run as /runs has it). With
    ``last_metric``, each row gets ``last`` = that reported metric at the trial's last reported epoch."""
    with tempfile.TemporaryDirectory() as directory:
        Path(directory, "experiment.toml").write_text(text)
        args = [mpirun(), "-n", str(workers + 1), "--oversubscribe", "--bind-to", "none", sys.executable, "-m",
                "hpc_hpo", "run", "experiment.toml", "-q"]
        env = mpi_env(PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
        done = subprocess.run(args, cwd=directory, env=env, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise SystemExit(f"run failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        results = read_results(Path(directory, "results.h5"))
        run = results.runs[-1]
        rows = results.records()
        if last_metric:
            reported = results.epochs[results.epochs["name"] == last_metric.encode()]
            last: dict[int, tuple[int, float]] = {}
            for row in reported:
                trial_id, epoch = int(row["trial_id"]), int(row["epoch"])
                if epoch >= last.get(trial_id, (-1, 0.0))[0]:
                    last[trial_id] = (epoch, float(row["value"]))
            for row in rows:
                row["last"] = last.get(row["trial_id"], (0, math.nan))[1]
        return rows, float(run["t_end"] - run["t_start"])


def final_pbt(rows: list[dict], epochs: int, minimize: bool = True) -> float:
    """The best member's score at the last epoch (what a user takes home: the end of a schedule)."""
    last = [r["value"] for r in rows if r["status"] == "done" and r["end_epoch"] == epochs]
    return min(last) if minimize else max(last)


def toy_ours(seed: int, strategy: str, delay: float) -> dict:
    space = f"""\
        lr = {{ type = "float", low = {LR[0]}, high = {LR[1]}, log = true }}
        delay = {{ type = "fixed", value = {delay} }}
        epochs = {{ type = "fixed", value = {EPOCHS} }}
        """
    if strategy == "random":
        phase = f'[[phase]]\nstrategy = "random"\ntrials = {MEMBERS}\n'
    else:
        phase = (f'[[phase]]\nstrategy = "pbt"\npopulation = {MEMBERS}\ninterval = {INTERVAL}\nepochs = {EPOCHS}\n'
                 f'quantile = {QUANTILE}\nresample_probability = {RESAMPLE}\nperturb = {list(FACTORS)}\n'
                 f'explore = "{"pb2" if strategy == "pb2" else "perturb"}"\n')
    rows, wall = run_ours(_experiment("light_objectives:pbt_toy", space, phase, seed), WORKERS)
    done = [r for r in rows if r["status"] == "done"]
    score = final_pbt(rows, EPOCHS) if strategy != "random" else min(r["value"] for r in done)
    epochs = sum((r["end_epoch"] - r["start_epoch"]) if r["member"] >= 0 else EPOCHS for r in done)
    return {"score": score, "wall": wall, "segments": len(rows), "epochs": epochs,
            "exploits": sum(1 for r in rows if r["parent"] >= 0 and
                            next(o for o in rows if o["trial_id"] == r["parent"])["member"] != r["member"])}


# --- Ray Tune ------------------------------------------------------------------------------------------------


RAY_SCRIPT = r"""
import json, os, sys, tempfile, time
sys.path.insert(0, sys.argv[3])
from light_objectives import toy_step
import ray
from ray import tune
from ray.tune.schedulers import PopulationBasedTraining

seed, delay = int(sys.argv[1]), float(sys.argv[2])
MEMBERS, INTERVAL, EPOCHS = %(members)d, %(interval)d, %(epochs)d


def trainable(config):
    loss, epoch = 1.0, 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            with open(os.path.join(directory, "state.json")) as f:
                state = json.load(f)
        loss, epoch = state["loss"], state["epoch"]
    while epoch < EPOCHS:  # one report (and checkpoint) per INTERVAL epochs: Ray's per-report cost is high
        for _ in range(min(INTERVAL, EPOCHS - epoch)):
            time.sleep(delay)
            loss = toy_step(loss, config["lr"])
            epoch += 1
        with tempfile.TemporaryDirectory() as directory:
            with open(os.path.join(directory, "state.json"), "w") as f:
                json.dump({"loss": loss, "epoch": epoch}, f)
            tune.report({"loss": loss, "epoch": epoch}, checkpoint=tune.Checkpoint.from_directory(directory))


import random, numpy as np
random.seed(seed); np.random.seed(seed)  # Ray's PBT and search draw from the global generators
t0 = time.time()
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
t1 = time.time()
pbt = PopulationBasedTraining(time_attr="epoch", perturbation_interval=INTERVAL,
                              hyperparam_mutations={"lr": tune.loguniform(%(low)r, %(high)r)},
                              quantile_fraction=%(quantile)r, resample_probability=%(resample)r,
                              perturbation_factors=%(factors)r)
storage = tempfile.mkdtemp()
tuner = tune.Tuner(tune.with_resources(trainable, {"cpu": 2 / MEMBERS}),
                   param_space={"lr": tune.loguniform(%(low)r, %(high)r)},
                   tune_config=tune.TuneConfig(scheduler=pbt, num_samples=MEMBERS, metric="loss", mode="min",
                                               max_concurrent_trials=MEMBERS, reuse_actors=True),
                   run_config=tune.RunConfig(stop={"epoch": EPOCHS}, storage_path=storage, verbose=0,
                                             checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))
grid = tuner.fit()
t2 = time.time()
finals = [r.metrics["loss"] for r in grid if r.metrics and r.metrics.get("epoch") == EPOCHS]
print(json.dumps({"score": min(finals) if finals else None, "wall": t2 - t1, "init": t1 - t0,
                  "trials": len(grid)}))
"""


def toy_ray(seed: int, delay: float) -> dict:
    script = RAY_SCRIPT % {"members": MEMBERS, "interval": INTERVAL, "epochs": EPOCHS, "low": LR[0], "high": LR[1],
                           "quantile": QUANTILE, "resample": RESAMPLE, "factors": FACTORS}
    env = dict(os.environ, RAY_DEDUP_LOGS="0", TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1", RAY_AIR_NEW_OUTPUT="0",
               PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))  # Ray's workers import it
    done = subprocess.run([sys.executable, "-c", script, str(seed), str(delay), str(TESTS)], capture_output=True,
                          text=True, timeout=1800, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"Ray Tune failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-4000:]}")
    result = json.loads(lines[-1])
    result["segments"] = MEMBERS * math.ceil(EPOCHS / INTERVAL)
    return result


def bench_toy(seeds: int, delay: float, peers: bool) -> dict:
    rows: dict[str, list[dict]] = {"pbt": [], "random": [], "pb2": []}
    if peers:
        rows["ray pbt"] = []
    for seed in range(seeds):
        for method in rows:
            rows[method].append(toy_ray(seed, delay) if method == "ray pbt" else toy_ours(seed, method, delay))
        print(f"# seed {seed}: " + ", ".join(f"{m} {r[-1]['score']:.4f} ({r[-1]['wall']:.1f} s)"
                                               for m, r in rows.items()), file=sys.stderr, flush=True)
    return rows


def toy_table(rows: dict[str, list[dict]], delay: float) -> str:
    fixed, lr = toy_best_fixed()
    lines = [f"Toy, {MEMBERS} members x {EPOCHS} epochs (exploit/explore every {INTERVAL}), {len(rows['pbt'])} seeds, "
             f"{delay * 1e3:g} ms per epoch; best fixed lr {lr:.3f} -> {fixed:.4f}, greedy schedule -> "
             f"{toy_greedy():.4f} (lower is better)",
             "", "Wall: the search from its start to its end (Ray: after ray.init). Overhead per segment: the time "
             f"a worker slot spends on a segment besides its {INTERVAL} epochs of sleep, i.e. (wall x {WORKERS} - "
             "epochs x delay) / segments.", "",
             "| method | median final loss | worst | best | epochs (median) | wall s (median) | overhead ms per segment "
             "| exploits |", "|---|---|---|---|---|---|---|---|"]
    for method, runs in rows.items():
        scores = [r["score"] for r in runs if r["score"] is not None]
        walls = [r["wall"] for r in runs]
        overhead = [1e3 * (r["wall"] * WORKERS - MEMBERS * EPOCHS * delay) / (MEMBERS * EPOCHS / INTERVAL)
                    for r in runs]
        exploits = statistics.median(r["exploits"] for r in runs) if "exploits" in runs[0] else float("nan")
        epochs = f"{statistics.median(r['epochs'] for r in runs):.0f}" if "epochs" in runs[0] else "-"
        cost = "-" if method == "random" else f"{statistics.median(overhead):.1f}"
        lines.append(f"| {method} | {statistics.median(scores):.4f} | {max(scores):.4f} | {min(scores):.4f} | "
                     f"{epochs} | {statistics.median(walls):.1f} | {cost} | "
                     f"{'-' if math.isnan(exploits) else f'{exploits:.0f}'} |")
    return "\n".join(lines)


# --- Keras digits -----------------------------------------------------------------------------------------------


DIGITS_SPACE = """\
    learning_rate = { type = "float", low = 1e-4, high = 1e-1, log = true }
    dropout       = { type = "float", low = 0.0, high = 0.6 }
    units         = { type = "fixed", value = 64 }
    batch_size    = { type = "fixed", value = 64 }
    activation    = { type = "fixed", value = "relu" }
    epochs        = { type = "fixed", value = %d }
    """


def digits_run(seed: int, strategy: str, members: int, epochs: int, interval: int, workers: int) -> dict:
    if strategy == "random":
        phase = f'[[phase]]\nstrategy = "random"\ntrials = {members}\n'
    else:
        phase = (f'[[phase]]\nstrategy = "pbt"\npopulation = {members}\ninterval = {interval}\nepochs = {epochs}\n'
                 f'explore = "{"pb2" if strategy == "pb2" else "perturb"}"\n')
    text = _experiment("hpc_hpo.examples.digits_mlp:objective", DIGITS_SPACE % epochs, phase, seed, "maximize",
                       "process")
    rows, wall = run_ours(text, workers, last_metric="val_accuracy")
    done = [r for r in rows if r["status"] == "done"]
    # Every method is judged at its last epoch (random search's objective returns its best epoch's accuracy).
    score = final_pbt(rows, epochs, minimize=False) if strategy != "random" else max(r["last"] for r in done)
    return {"score": score, "wall": wall, "segments": len(rows),
            "epochs": sum(r["end_epoch"] - r["start_epoch"] if r["member"] >= 0 else epochs for r in done)}


def bench_digits(seeds: int, epochs: int = 24, interval: int = 4) -> dict:
    plan = [("pbt", 8), ("random", 8), ("pbt", 4), ("pb2", 4)]
    rows: dict[str, list[dict]] = {f"{s} x{m}": [] for s, m in plan}
    for seed in range(seeds):
        for strategy, members in plan:
            rows[f"{strategy} x{members}"].append(digits_run(seed, strategy, members, epochs, interval, 4))
        print(f"# digits seed {seed}: " + ", ".join(f"{m} {r[-1]['score']:.4f}" for m, r in rows.items()),
              file=sys.stderr, flush=True)
    return {"epochs": epochs, "interval": interval, "rows": rows}


def digits_table(data: dict) -> str:
    lines = [f"Keras digits MLP, learning rate and dropout, {data['epochs']} epochs per member (exploit/explore every "
             f"{data['interval']}), {len(next(iter(data['rows'].values())))} seeds, 4 workers; validation accuracy "
             f"at the last epoch (higher is better)", "",
             "| method x members | median | worst | best | epochs (median) | segments (median) | wall s (median) |",
             "|---|---|---|---|---|---|---|"]
    for method, runs in data["rows"].items():
        scores = [r["score"] for r in runs]
        lines.append(f"| {method} | {statistics.median(scores):.4f} | {min(scores):.4f} | {max(scores):.4f} | "
                     f"{statistics.median(r['epochs'] for r in runs):.0f} | "
                     f"{statistics.median(r['segments'] for r in runs):.0f} | "
                     f"{statistics.median(r['wall'] for r in runs):.1f} |")
    return "\n".join(lines)


# --- overhead of an exploit -----------------------------------------------------------------------------------


OVERHEAD_SCRIPT = r"""
import json, tempfile, time
from types import SimpleNamespace
import numpy as np
from hpc_hpo import tf as hpo_tf
keras = hpo_tf.keras()
rng = np.random.default_rng(0)
X = rng.normal(size=(1024, 64)).astype("float32"); y = rng.integers(0, 10, 1024)
out = {}
for units in (64, 512, 2048):
    def model():
        m = keras.Sequential([keras.Input((64,)), keras.layers.Dense(units, activation="relu"),
                              keras.layers.Dense(units, activation="relu"), keras.layers.Dense(10, activation="softmax")])
        m.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        return m
    a = model(); a.fit(X, y, epochs=1, verbose=0)
    saves, restores, directory = [], [], None
    for i in range(7):
        directory = tempfile.mkdtemp()
        trial = SimpleNamespace(checkpoint_dir=directory, restore_from=directory, member=0, start_epoch=1)
        t = time.perf_counter(); hpo_tf.save_checkpoint(trial, a); saves.append(time.perf_counter() - t)
        b = model()
        t = time.perf_counter(); hpo_tf.restore_checkpoint(trial, b); restores.append(time.perf_counter() - t)
    import os
    size = sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory)) / 1e6
    out[units] = {"params": int(a.count_params()), "mb": size, "save": float(np.median(saves[2:])),
                  "restore": float(np.median(restores[2:]))}
print(json.dumps(out))
"""


def bench_overhead() -> dict:
    """Keras: saving and restoring checkpoints of three sizes; the master's decision per exploit (pure)."""
    done = subprocess.run([sys.executable, "-c", OVERHEAD_SCRIPT], capture_output=True, text=True, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"overhead script failed:\n{done.stderr[-3000:]}")
    keras_times = json.loads(lines[-1])
    import numpy as np

    from hpc_hpo.search.pbt import Finished, PbtSettings, Population
    from hpc_hpo.search.space import parse_space

    space = parse_space({"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
                         "dropout": {"type": "float", "low": 0.0, "high": 0.6}})
    decisions = {}
    for members in (8, 64, 512, 4096):
        population = Population(space, PbtSettings(members, 1, 50 if members <= 512 else 20), True,
                                np.random.default_rng(0))
        rng, running, trial, spent, count = np.random.default_rng(1), [], 0, 0.0, 0
        while not population.finished:
            while (segment := population.next_segment()) is not None:
                population.start(segment, trial)
                running.append((trial, segment))
                trial += 1
            trial_id, segment = running.pop(int(rng.integers(len(running))))
            score = float(rng.random())
            t = time.perf_counter()
            population.finish(Finished(trial_id, segment.member, segment.parent, segment.start_epoch,
                                       segment.end_epoch, segment.params, score))
            population.removable()
            population.remaining()
            spent += time.perf_counter() - t
            count += 1
        decisions[members] = {"us_per_segment": 1e6 * spent / count, "exploits": population.exploits,
                              "segments": count}
    return {"keras": keras_times, "decisions": decisions}


def overhead_table(data: dict) -> str:
    lines = ["An exploit copies nothing: the segment restores the donor's checkpoint directory in place. Keras "
             "(CPU here), median of 5:", "",
             "| model (dense units) | parameters | checkpoint MB | save ms | restore ms | restore / save |",
             "|---|---|---|---|---|---|"]
    for units, k in data["keras"].items():
        lines.append(f"| 2 x {units} | {k['params']:,} | {k['mb']:.2f} | {1e3 * k['save']:.1f} | "
                     f"{1e3 * k['restore']:.1f} | {k['restore'] / k['save']:.2f} |")
    lines += ["", "The master's decision per finished segment (rank, exploit, explore, retention), pure Python:", "",
              "| members | segments | exploits | us per segment |", "|---|---|---|---|"]
    for members, d in data["decisions"].items():
        lines.append(f"| {members} | {d['segments']} | {d['exploits']} | {d['us_per_segment']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("toy", "digits", "overhead", "all"), nargs="?", default="toy")
    parser.add_argument("--seeds", type=int, default=0, help="toy: 10, digits: 3")
    parser.add_argument("--delay", type=float, default=0.005, help="seconds per toy epoch (default 0.005)")
    parser.add_argument("--peers", action="store_true", help="toy: also Ray Tune's PBT")
    parser.add_argument("--save", help="write the measurements as JSON")
    parser.add_argument("--load", help="print the tables of a saved JSON instead of measuring")
    args = parser.parse_args()
    if args.load:
        data = json.loads(Path(args.load).read_text())
    else:
        data = {"delay": args.delay}
        if args.what in ("toy", "all"):
            data["toy"] = bench_toy(args.seeds or 10, args.delay, args.peers)
        if args.what in ("digits", "all"):
            data["digits"] = bench_digits(args.seeds or 3)
        if args.what in ("overhead", "all"):
            data["overhead"] = bench_overhead()
        if args.save:
            Path(args.save).write_text(json.dumps(data, indent=1))
    if "toy" in data:
        print(toy_table(data["toy"], data["delay"]), "\n")
    if "digits" in data:
        print(digits_table(data["digits"]), "\n")
    if "overhead" in data:
        print(overhead_table(data["overhead"]))


if __name__ == "__main__":
    main()
