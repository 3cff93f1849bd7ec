"""Early stopping on synthetic learning curves: quality against epochs spent. Prints tables; not a pass/fail test.

    python benchmarks/early_stopping.py                 # ours: none, median, asha, hyperband x random, bayes
    python benchmarks/early_stopping.py --peers         # + Optuna (TPE + SHA / Hyperband pruners), Ray Tune ASHA
                                                        #   (pip install -e '.[bench]')
    python benchmarks/early_stopping.py --plot docs/images/early_stopping.png

The curves are ``light_objectives.learning_curve`` of the tests: the final quality is the Branin
function of (x, y) scaled to [0, ~1], the learning rate sets how fast a curve gets there (fast
learners with a poor end lead slow ones with a good end for a while), and every reported value
has Gaussian noise (``--noise``). Each search has 81 trials of up to 27 epochs; ours run with 8
workers under real ``mpirun -n 9 --oversubscribe`` (each epoch sleeps ``--delay`` seconds so that
workers overlap as on a cluster); Bayesian searches start with 8 Sobol points. Per method and
seed: epochs trained, and the regret of the best configuration that ran to the end, judged by
its noise-free final quality (what the user would get from it). The peers get the same curves,
the same 81 trials, 8 parallel workers and the same per-epoch delay: Optuna's TPE with its
SuccessiveHalvingPruner or HyperbandPruner (8 processes sharing one journal file), and Ray
Tune's ASHAScheduler over random search (8 concurrent trials).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
sys.path[:0] = [str(HERE), str(TESTS)]

from _mpi import mpi_env, mpirun  # noqa: E402

from hpc_hpo.results.reader import read_results  # noqa: E402

from light_objectives import curve_quality  # noqa: E402

TRIALS, MAX_EPOCHS, ETA, WORKERS, SOBOL = 81, 27, 3, 8, 8
RULES = ("none", "median", "asha", "hyperband")
#: Best and worst noise-free final quality over the space (a fine grid): regrets are measured from the first,
#: "within 1% of the range" against their difference.
_GRID = [(x / 200, y / 200) for x in range(201) for y in range(201)]
OPTIMUM = min(curve_quality({"x": x, "y": y, "lr": 0.1}, MAX_EPOCHS) for x, y in _GRID)
RANGE = max(curve_quality({"x": x, "y": y, "lr": 1e-4}, MAX_EPOCHS) for x, y in _GRID) - OPTIMUM


class Finished(NamedTuple):
    """One trial of a search, as the tables need it."""

    t_end: float
    epochs: int
    value: float  # what the search saw (noisy); compared only among trials that ran to the end
    regret: float  # its noise-free final quality, less the optimum: what the user would get from it


def summary(trials: list[Finished], budget: float = math.inf) -> tuple[int, float]:
    """(epochs trained, regret of the best trial that ran to the end) over the trials that finished, in the order they
    did, while the epochs trained stay within ``budget``."""
    spent, best = 0, None
    # By end time alone (a stable sort: ties keep the order the trials were made in): Ray's timestamps are whole
    # seconds, and breaking their ties by epochs or value would favour it.
    for trial in sorted(trials, key=lambda t: t.t_end):
        if spent + trial.epochs > budget:
            break
        spent += trial.epochs
        if trial.epochs >= MAX_EPOCHS and (best is None or trial.value < best.value):
            best = trial
    return spent, (best.regret if best is not None else math.nan)


def ours(search: str, rule: str, seed: int, delay: float, noise: float, cwd: Path) -> list[Finished]:
    """Every trial of one of our searches."""
    phases = (f'[[phase]]\nstrategy = "sobol"\ntrials = {SOBOL}\n[[phase]]\nstrategy = "bayes"\ntrials = {TRIALS - SOBOL}\n'
              if search == "bayes" else f'[[phase]]\nstrategy = "random"\ntrials = {TRIALS}\n')
    stopping = "" if rule == "none" else textwrap.dedent(f"""
        [stopping]
        rule = "{rule}"
        metric = "val_loss"
        min_epochs = 1
        max_epochs = {MAX_EPOCHS}
        reduction_factor = {ETA}
        """)
    name = f"{search}-{rule}-{seed}"
    path = cwd / f"{name}.toml"
    path.write_text(textwrap.dedent(f"""
        [experiment]
        objective = "light_objectives:learning_curve"
        results = "{name}.h5"
        seed = {seed}
        [space]
        x = {{ type = "float", low = 0.0, high = 1.0 }}
        y = {{ type = "float", low = 0.0, high = 1.0 }}
        lr = {{ type = "float", low = 1e-4, high = 1e-1, log = true }}
        delay = {{ type = "fixed", value = {delay} }}
        noise = {{ type = "fixed", value = {noise} }}
        [workers]
        executor = "inline"
        """) + phases + stopping)
    env = mpi_env(PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    args = [mpirun(), "-n", str(WORKERS + 1), "--oversubscribe", "--bind-to", "none", sys.executable, "-m",
            "hpc_hpo", "run", str(path), "--overwrite", "-q"]
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{done.stderr}")
    return [Finished(r["t_end"], r["epochs"], r["value"], regret({k: r[f"param_{k}"] for k in ("x", "y", "lr")}))
            for r in read_results(cwd / f"{name}.h5").records()]


def regret(params: dict) -> float:
    return curve_quality(params, MAX_EPOCHS) - OPTIMUM


# --- peers ----------------------------------------------------------------------------------------------


def optuna_run(pruner_name: str, seed: int, delay: float, noise: float, cwd: Path) -> list[Finished]:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = str(cwd / f"optuna-{pruner_name}-{seed}.log")
    pruner = (optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=ETA) if pruner_name == "sha" else
              optuna.pruners.HyperbandPruner(min_resource=1, max_resource=MAX_EPOCHS, reduction_factor=ETA))
    study = optuna.create_study(study_name="es", storage=JournalStorage(JournalFileBackend(path)), pruner=pruner)
    context = multiprocessing.get_context("spawn")
    # Each process loads the study with its own sampler (seeded) and the same pruner, as a cluster job would.
    processes = [context.Process(target=_optuna_pruned_worker, args=(path, pruner_name, seed * 100 + i, delay, noise))
                 for i in range(WORKERS)]
    for p in processes:
        p.start()
    for p in processes:
        p.join()
    return [Finished(t.datetime_complete.timestamp(), int(t.user_attrs.get("epochs", 0)),
                     t.value if t.value is not None else math.inf, regret(t.params))
            for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None]


def _optuna_pruned_worker(path: str, pruner_name: str, seed: int, delay: float, noise: float) -> None:
    import numpy as np
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.study import MaxTrialsCallback

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    pruner = (optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=ETA) if pruner_name == "sha" else
              optuna.pruners.HyperbandPruner(min_resource=1, max_resource=MAX_EPOCHS, reduction_factor=ETA))
    study = optuna.load_study(study_name="es", storage=JournalStorage(JournalFileBackend(path)),
                              sampler=optuna.samplers.TPESampler(seed=seed, constant_liar=True), pruner=pruner)

    def objective(trial):
        params = {"x": trial.suggest_float("x", 0, 1), "y": trial.suggest_float("y", 0, 1),
                  "lr": trial.suggest_float("lr", 1e-4, 1e-1, log=True)}
        rng = np.random.default_rng([seed, trial.number])
        loss = math.inf
        for epoch in range(MAX_EPOCHS):
            time.sleep(delay)
            loss = curve_quality(params, epoch + 1) + noise * float(rng.normal())
            trial.report(loss, epoch + 1)
            trial.set_user_attr("epochs", epoch + 1)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return loss

    study.optimize(objective, callbacks=[MaxTrialsCallback(TRIALS, states=None)])


def ray_run(seed: int, delay: float, noise: float, cwd: Path) -> list[Finished]:
    import numpy as np
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    def trainable(config):
        rng = np.random.default_rng([seed, int(config["x"] * 1e9)])
        for epoch in range(MAX_EPOCHS):
            time.sleep(delay)
            loss = curve_quality(config, epoch + 1) + noise * float(rng.normal())
            tune.report({"val_loss": loss, "epochs": epoch + 1})

    if not ray.is_initialized():
        ray.init(num_cpus=WORKERS, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}})
    space = {"x": tune.uniform(0, 1), "y": tune.uniform(0, 1), "lr": tune.loguniform(1e-4, 1e-1)}
    scheduler = ASHAScheduler(time_attr="epochs", max_t=MAX_EPOCHS, grace_period=1, reduction_factor=ETA)
    tuner = tune.Tuner(tune.with_resources(trainable, {"cpu": 1}), param_space=space,
                       tune_config=tune.TuneConfig(metric="val_loss", mode="min", scheduler=scheduler,
                                                   num_samples=TRIALS, max_concurrent_trials=WORKERS,
                                                   search_alg=tune.search.BasicVariantGenerator(random_state=seed)),
                       run_config=tune.RunConfig(storage_path=str(cwd / "ray"), name=f"asha-{seed}", verbose=0))
    return [Finished(float(r.metrics["timestamp"]), int(r.metrics.get("epochs", 0)), float(r.metrics["val_loss"]),
                     regret(r.config)) for r in tuner.fit()]


# --- the tables -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--delay", type=float, default=0.005, help="seconds each epoch sleeps (default 0.005)")
    parser.add_argument("--noise", type=float, default=0.02, help="standard deviation of a reported value")
    parser.add_argument("--peers", action="store_true", help="also Optuna and Ray Tune (pip install -e '.[bench]')")
    parser.add_argument("--searches", default="random,bayes")
    parser.add_argument("--rules", default=",".join(RULES))
    parser.add_argument("--plot", help="write regret against epochs to this PNG")
    parser.add_argument("--save", help="write every trial of every run to this JSON file")
    parser.add_argument("--load", help="make the tables and the plot from a --save file instead of running")
    args = parser.parse_args()
    methods: dict[str, list[list[Finished]]] = {}
    started = time.monotonic()
    if args.load:
        data = json.loads(Path(args.load).read_text())
        methods = {name: [[Finished(*trial) for trial in run] for run in runs] for name, runs in data.items()}
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        for search in [] if args.load else args.searches.split(","):
            for rule in args.rules.split(","):
                methods[f"ours {search} + {rule}"] = [ours(search, rule, seed, args.delay, args.noise, cwd)
                                                      for seed in range(args.seeds)]
                print(f"  ours {search} + {rule}: {time.monotonic() - started:.0f} s", file=sys.stderr)
        if args.peers and not args.load:
            for pruner in ("sha", "hyperband"):
                methods[f"optuna tpe + {pruner}"] = [optuna_run(pruner, seed, args.delay, args.noise, cwd)
                                                     for seed in range(args.seeds)]
                print(f"  optuna {pruner}: {time.monotonic() - started:.0f} s", file=sys.stderr)
            methods["ray random + asha"] = [ray_run(seed, args.delay, args.noise, cwd) for seed in range(args.seeds)]
    if args.save:
        Path(args.save).write_text(json.dumps({name: [[list(t) for t in run] for run in runs]
                                               for name, runs in methods.items()}))
    seeds = len(next(iter(methods.values())))
    print(f"early stopping: {TRIALS} trials of up to {MAX_EPOCHS} epochs, {WORKERS} workers, {seeds} seeds, "
          f"noise {args.noise:g}; regret of the best trial that ran to the end (noise-free final quality; range "
          f"{RANGE:.3f})")
    # Equal epochs: every method cut at the epochs the most frugal method spent (its median over the seeds).
    full = {name: [summary(run) for run in runs] for name, runs in methods.items()}
    budget = min(statistics.median(e for e, _ in results) for results in full.values())
    print(f"{'method':<28} {'epochs':>7} {'of none':>8} {'regret':>8} {'worst':>8} {'within 1%':>10} "
          f"{'regret at ' + format(budget, '.0f') + ' epochs':>22}")
    for name, results in full.items():
        epochs = statistics.median(e for e, _ in results)
        baseline = full.get(f"ours {name.split()[1]} + none") or full.get("ours random + none")
        ratio = epochs / statistics.median(e for e, _ in baseline) if baseline else math.nan
        regrets = [r for _, r in results]
        close = sum(r <= 0.01 * RANGE for r in regrets)
        cut = [summary(run, budget)[1] for run in methods[name]]
        cut_text = f"{_median(cut):.4f} ({sum(math.isnan(c) for c in cut)} none)"
        print(f"{name:<28} {epochs:>7.0f} {ratio:>8.2f} {_median(regrets):>8.4f} {max(regrets):>8.4f} "
              f"{close:>5}/{len(regrets):<4} {cut_text:>22}")
    print("epochs and regret: medians over the seeds; regret: of the best trial that ran to the end; within 1%: seeds "
          "whose regret is within 1% of the range; at equal epochs: the trials that finished before that many epochs "
          "were spent (none: no trial had run to the end by then, counted as the worst)")
    if args.plot:
        plot(full, args.plot)


def _median(values: list[float]) -> float:
    """The median, counting NaN (no trial ran to the end) as the worst."""
    return statistics.median([math.inf if math.isnan(v) else v for v in values])


def plot(methods: dict[str, list[tuple[int, float]]], path: str) -> None:
    """Regret against epochs trained, a point per seed and a large one for the medians."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    colours = [plt.cm.tab10(i) for i in range(10)] + ["black", "#bcbd22", "#17becf"]
    for i, (name, runs) in enumerate(methods.items()):
        colour = colours[i % len(colours)]
        marker = "D" if name.startswith("ray") else "^" if name.startswith("optuna") else "s" if "bayes" in name else "o"
        ax.scatter([e for e, _ in runs], [max(r, 1e-4) for _, r in runs], color=colour, alpha=0.3, s=14, marker=marker)
        ax.scatter([statistics.median(e for e, _ in runs)], [max(statistics.median(r for _, r in runs), 1e-4)],
                   color=colour, s=90, marker=marker, edgecolor="black", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("epochs trained by the whole search")
    ax.set_ylabel("regret of the best trial that ran to the end")
    ax.set_title(f"{TRIALS} trials of up to {MAX_EPOCHS} epochs, {WORKERS} workers (large: median of the seeds)",
                 fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    main()
