"""The experiment file: TOML in, frozen dataclasses out, every field validated here.

The file has these parts: ``[experiment]`` (what to run and where results go), ``[space]``
(the parameters), one or more ``[[phase]]`` tables (how to search, in order) and an optional
``[workers]`` table (how workers run trials: process or inline, time limit, GPUs per trial) and an optional
``[stopping]`` table (early stopping: which running trials to stop). Command-line
flags override the file through :func:`apply_overrides`. The resolved config, with the seed
filled in, is written back as TOML by :func:`to_toml` and stored in the results file.
"""

from __future__ import annotations

import difflib
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ._toml import toml_key, toml_value, tomllib
from .errors import ConfigError
from .search.space import Space, parse_space
from .search.stopping import RULES, max_brackets
from .search.strategies import STRATEGIES
from .search.strategies.base import check_positive_int

#: The experiment run when ``hpc_hpo run`` is given no file.
DEFAULT_EXPERIMENT = Path(__file__).with_name("default_experiment.toml")

EXPERIMENT_KEYS = ("name", "objective", "direction", "results", "seed", "workdir", "max_initial_failures", "repeats",
                   "resume")
DIRECTIONS = ("minimize", "maximize")
OBJECTIVE_PATTERN = re.compile(r"^(?P<target>[^:]+):(?P<function>[A-Za-z_][A-Za-z0-9_.]*)$")
PHASE_COMMON_KEYS = ("strategy", "name", "trials", "repeats")
WORKERS_KEYS = ("executor", "trial_timeout", "max_trials_per_process", "max_process_memory_mb", "gpus_per_trial",
                "workers_per_gpu", "threads", "startup_timeout")
EXECUTORS = ("auto", "process", "inline")
STOPPING_KEYS = ("rule", "metric", "min_epochs", "max_epochs", "reduction_factor", "brackets")


@dataclass(frozen=True)
class ExperimentConfig:
    """The ``[experiment]`` table: what to run, how to judge it, where results go."""

    name: str
    objective: str
    direction: str = "minimize"
    results: str = ""
    seed: int = 0
    workdir: str = ""
    max_initial_failures: int = 10
    repeats: int = 1
    resume: bool = False  # continue an existing results file (as --resume)

    @property
    def minimize(self) -> bool:
        return self.direction == "minimize"


@dataclass(frozen=True)
class WorkersConfig:
    """The ``[workers]`` table: how each worker runs its trials and what hardware it gets.

    ``executor``: "process" runs trials in a supervised child process (replaced every
    ``max_trials_per_process`` trials, when it crashes, or when its memory passes
    ``max_process_memory_mb``); "inline" calls the objective in the worker itself; "auto"
    (the default) picks "process" when the objective's module imports TensorFlow, Keras,
    PyTorch or JAX. ``trial_timeout`` (seconds, 0 = none) needs the process executor.
    ``threads = 0`` divides each node's CPUs among its workers. ``startup_timeout`` (seconds,
    0 = none) bounds a rank's start-up (until it has imported the objective) and every start of
    a trial process: a hung node ends the job at start-up, or retires its worker later.
    """

    executor: str = "auto"
    trial_timeout: float = 0.0
    max_trials_per_process: int = 10
    max_process_memory_mb: float = 0.0
    gpus_per_trial: int = 1
    workers_per_gpu: int = 1
    threads: int = 0
    startup_timeout: float = 600.0


@dataclass(frozen=True)
class StoppingConfig:
    """The ``[stopping]`` table: which running trials to stop early (:mod:`hpc_hpo.search.stopping`).

    ``metric`` is a name the objective reports with ``trial.report(epoch, {...})``, compared in
    the experiment's direction; trials are judged after ``min_epochs`` epochs and later, and one
    never stopped trains ``max_epochs`` (``trial.max_epochs``). ``reduction_factor`` (eta): ASHA
    and Hyperband keep the best ``1/eta`` at each rung. ``brackets`` (Hyperband; 0 = as many as fit).
    """

    rule: str = "none"
    metric: str = ""
    min_epochs: int = 1
    max_epochs: int = 0
    reduction_factor: float = 3.0
    brackets: int = 0

    @property
    def active(self) -> bool:
        return self.rule != "none"


@dataclass(frozen=True)
class PhaseConfig:
    """One ``[[phase]]``: a strategy, how many points it proposes, and its own options.

    Each point is evaluated ``repeats`` times (on different workers where possible), so the
    phase runs ``trials * repeats`` trials.
    """

    index: int  # 1-based, as users count phases
    strategy: str
    trials: int
    name: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    repeats: int = 1

    @property
    def label(self) -> str:
        return self.name or self.strategy

    @property
    def runs(self) -> int:
        """Trials this phase runs: its points times their repeats."""
        return self.trials * self.repeats


@dataclass(frozen=True)
class Config:
    """A whole, validated experiment.

    ``base_dir`` is where relative objective files are found; ``source`` is the experiment
    file it was read from (absolute), stored in the results file.
    """

    experiment: ExperimentConfig
    space: Space
    phases: tuple[PhaseConfig, ...]
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    stopping: StoppingConfig = field(default_factory=StoppingConfig)
    base_dir: str = "."
    source: str = ""

    @property
    def budget(self) -> int:
        """Total number of trials (rows in the results file): the sum over the phases."""
        return sum(p.runs for p in self.phases)

    @property
    def results_path(self) -> Path:
        return Path(self.experiment.results)

    @property
    def workdir_path(self) -> Path:
        return Path(self.experiment.workdir)


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate an experiment file; None loads the built-in default experiment."""
    file = Path(path) if path is not None else DEFAULT_EXPERIMENT
    where = str(path) if path is not None else "default experiment"
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such experiment file") from None
    except IsADirectoryError:
        raise ConfigError(f"{where}: is a directory, not an experiment file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read the experiment file ({exc})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: TOML syntax error: {exc}") from None
    base_dir = str(file.resolve().parent)
    return parse_config(data, base_dir=base_dir, source=str(file.resolve()), default_name=file.stem)


def parse_config(data: Mapping[str, Any], base_dir: str = ".", source: str = "", default_name: str = "experiment") -> Config:
    """Validate the tables of an experiment file (already parsed from TOML)."""
    _check_keys(data, ("experiment", "space", "phase", "workers", "stopping"), "", kind="table")
    if "experiment" not in data:
        raise ConfigError("experiment: the [experiment] table is required (with at least 'objective')")
    experiment = _parse_experiment(data["experiment"], default_name)
    if "space" not in data:
        raise ConfigError("space: the [space] table is required (one entry per parameter)")
    space = parse_space(data["space"])
    phases_raw = data.get("phase")
    if phases_raw is None:
        raise ConfigError('phase: at least one [[phase]] table is required (for example strategy = "random", trials = 20)')
    if not isinstance(phases_raw, list) or not all(isinstance(p, Mapping) for p in phases_raw):
        raise ConfigError("phase: must be written as [[phase]] tables (an array of tables)")
    phases = tuple(_parse_phase(raw, i + 1, space, experiment.repeats) for i, raw in enumerate(phases_raw))
    workers = _parse_workers(data.get("workers", {}))
    stopping = _parse_stopping(data.get("stopping", {}))
    if stopping.active:
        repeated = next((p for p in phases if p.repeats > 1), None)
        if repeated is not None:
            raise ConfigError(f"stopping.rule: early stopping cannot be combined with repeats (a point's repeats would "
                              f"be judged against each other) (got rule = {stopping.rule!r}, phase[{repeated.index}] "
                              f"repeats = {repeated.repeats})")
    for phase in phases:
        if phase.strategy == "pbt" and phase.repeats > 1:
            raise ConfigError(f"phase[{phase.index}].repeats: a pbt phase cannot repeat its segments (each member is "
                              f"one run of training) (got repeats = {phase.repeats})")
        if phase.strategy == "pbt" and stopping.active:
            raise ConfigError(f"stopping.rule: early stopping cannot be combined with a pbt phase (pbt replaces the "
                              f"members it would stop) (got rule = {stopping.rule!r}, phase[{phase.index}] strategy = "
                              f"\"pbt\")")
    return Config(experiment=experiment, space=space, phases=phases, workers=workers, stopping=stopping,
                  base_dir=base_dir, source=source)


def with_population(config: Config, workers: int, stored: Config | None = None) -> Config:
    """Settle ``population = 0`` of pbt phases: the stored experiment's population when a search resumes (its
    members are in the file), else one member per worker that takes trials (at least 2)."""
    phases = []
    for phase in config.phases:
        if phase.strategy == "pbt" and not phase.options["population"]:
            population = max(2, workers)
            if stored is not None and len(stored.phases) >= phase.index:
                population = stored.phases[phase.index - 1].options.get("population") or population
            options = {**phase.options, "population": population}
            phase = replace(phase, options=options, trials=STRATEGIES["pbt"].fixed_size(options, config.space))
        phases.append(phase)
    return replace(config, phases=tuple(phases))


def apply_overrides(config: Config, results: str | None = None, seed: int | None = None, trials: int | None = None,
                    startup_timeout: float | None = None) -> Config:
    """Command-line flags win over the file: ``--results``, ``--seed``, ``--trials`` (last phase),
    ``--startup-timeout``."""
    experiment, workers = config.experiment, config.workers
    if startup_timeout is not None:
        workers = replace(workers, startup_timeout=startup_timeout)
    if results is not None:
        experiment = replace(experiment, results=results, workdir=_default_workdir(results))
    if seed is not None:
        experiment = replace(experiment, seed=_check_seed(seed, "--seed"))
    phases = config.phases
    if trials is not None:
        last = phases[-1]
        cls = STRATEGIES[last.strategy]
        if not cls.sized_by_trials:
            raise ConfigError(
                f"--trials: the last phase uses strategy '{last.strategy}', whose size is fixed "
                f"({last.trials} points) (got --trials {trials})"
            )
        phases = phases[:-1] + (replace(last, trials=check_positive_int(trials, "--trials")),)
    return replace(config, experiment=experiment, phases=phases, workers=workers)


def with_seed(config: Config) -> Config:
    """Fill in a random seed when the file gives none, so the run can be reproduced later."""
    if config.experiment.seed >= 0:
        return config
    return replace(config, experiment=replace(config.experiment, seed=secrets.randbits(31)))


def _check_keys(table: Mapping[str, Any], allowed: tuple[str, ...], where: str, kind: str = "key") -> None:
    for key in table:
        if key not in allowed:
            hint = difflib.get_close_matches(key, allowed, n=1)
            suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
            name = f"{where}.{key}" if where else key
            raise ConfigError(f"{name}: unknown {kind} (allowed: {', '.join(allowed)}){suggestion}")


def _check_seed(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: must be an integer (got {value!r})")
    if not 0 <= value < 2**63:
        raise ConfigError(f"{where}: must be >= 0 (got {value})")
    return value


def _check_string(table: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if value is None:
        raise ConfigError(f"{where}.{key}: is required")
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}.{key}: must be a non-empty string (got {value!r})")
    return value


def _default_workdir(results: str) -> str:
    path = Path(results)
    return str(path.with_name(path.stem + "-trials"))


def _parse_experiment(table: Any, default_name: str) -> ExperimentConfig:
    where = "experiment"
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: must be a table (got {table!r})")
    _check_keys(table, EXPERIMENT_KEYS, where)
    name = _check_string(table, "name", where, default=default_name)
    objective = _check_string(table, "objective", where)
    if not OBJECTIVE_PATTERN.match(objective):
        raise ConfigError(
            f"{where}.objective: must be 'package.module:function' or 'path/to/file.py:function' (got {objective!r})"
        )
    direction = table.get("direction", "minimize")
    if direction not in DIRECTIONS:
        raise ConfigError(f"{where}.direction: must be 'minimize' or 'maximize' (got {direction!r})")
    results = _check_string(table, "results", where, default=f"{name}.h5")
    workdir = _check_string(table, "workdir", where, default=_default_workdir(results))
    seed = _check_seed(table["seed"], f"{where}.seed") if "seed" in table else -1
    failures = table.get("max_initial_failures", 10)
    if isinstance(failures, bool) or not isinstance(failures, int) or failures < 0:
        raise ConfigError(f"{where}.max_initial_failures: must be an integer >= 0 (0 turns the check off) (got {failures!r})")
    repeats = check_positive_int(table.get("repeats", 1), f"{where}.repeats")
    resume = table.get("resume", False)
    if not isinstance(resume, bool):
        raise ConfigError(f"{where}.resume: must be true or false (got {resume!r})")
    return ExperimentConfig(name, objective, direction, results, seed, workdir, failures, repeats, resume)


def _parse_phase(raw: Mapping[str, Any], index: int, space: Space, repeats: int) -> PhaseConfig:
    where = f"phase[{index}]"
    strategy = raw.get("strategy")
    if strategy is None:
        raise ConfigError(f"{where}.strategy: is required (one of {', '.join(STRATEGIES)})")
    if strategy not in STRATEGIES:
        raise ConfigError(f"{where}.strategy: unknown strategy (allowed: {', '.join(STRATEGIES)}) (got {strategy!r})")
    cls = STRATEGIES[strategy]
    _check_keys(raw, PHASE_COMMON_KEYS + cls.options, where)
    name = raw.get("name", "")
    if not isinstance(name, str):
        raise ConfigError(f"{where}.name: must be a string (got {name!r})")
    options = cls.parse_options({k: v for k, v in raw.items() if k in cls.options}, space, where)
    if cls.sized_by_trials:
        if "trials" not in raw:
            raise ConfigError(f"{where}.trials: is required for strategy '{strategy}' (the number of trials to run)")
        trials = check_positive_int(raw["trials"], f"{where}.trials")
    else:
        trials = cls.fixed_size(options, space)
        if "trials" in raw and raw["trials"] != trials:
            raise ConfigError(
                f"{where}.trials: strategy '{strategy}' runs exactly its {trials} points; "
                f"leave 'trials' out (got {raw['trials']!r})"
            )
    repeats = check_positive_int(raw.get("repeats", repeats), f"{where}.repeats")
    return PhaseConfig(index=index, strategy=strategy, trials=trials, name=name, options=options, repeats=repeats)


def _parse_workers(table: Any) -> WorkersConfig:
    where = "workers"
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: must be a table (got {table!r})")
    _check_keys(table, WORKERS_KEYS, where)
    default = WorkersConfig()
    executor = table.get("executor", default.executor)
    if executor not in EXECUTORS:
        raise ConfigError(f"{where}.executor: must be one of {', '.join(EXECUTORS)} (got {executor!r})")

    def number(key: str, default_value: float) -> float:
        value = table.get(key, default_value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"{where}.{key}: must be a number >= 0 (0 turns it off) (got {value!r})")
        return float(value)

    timeout = number("trial_timeout", default.trial_timeout)
    memory = number("max_process_memory_mb", default.max_process_memory_mb)
    startup_timeout = number("startup_timeout", default.startup_timeout)
    if executor == "inline" and (timeout or memory):
        key = "trial_timeout" if timeout else "max_process_memory_mb"
        raise ConfigError(f"{where}.{key}: needs executor = \"process\" (a trial running inline cannot be "
                          f"stopped) (got executor = \"inline\", {key} = {table[key]!r})")
    per_process = check_positive_int(table.get("max_trials_per_process", default.max_trials_per_process),
                                     f"{where}.max_trials_per_process")
    gpus_per_trial = check_positive_int(table.get("gpus_per_trial", 1), f"{where}.gpus_per_trial")
    workers_per_gpu = check_positive_int(table.get("workers_per_gpu", 1), f"{where}.workers_per_gpu")
    if gpus_per_trial > 1 and workers_per_gpu > 1:
        raise ConfigError(f"{where}: gpus_per_trial and workers_per_gpu cannot both be above 1 "
                          f"(got gpus_per_trial = {gpus_per_trial}, workers_per_gpu = {workers_per_gpu})")
    threads = table.get("threads", 0)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ConfigError(f"{where}.threads: must be an integer >= 0 (0 divides the CPUs among the workers) "
                          f"(got {threads!r})")
    return WorkersConfig(executor, timeout, per_process, memory, gpus_per_trial, workers_per_gpu, threads,
                         startup_timeout)


def _parse_stopping(table: Any) -> StoppingConfig:
    where = "stopping"
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: must be a table (got {table!r})")
    _check_keys(table, STOPPING_KEYS, where)
    rule = table.get("rule", "none")
    if rule not in RULES:
        raise ConfigError(f"{where}.rule: unknown rule (allowed: {', '.join(RULES)}) (got {rule!r})")
    if rule == "none":
        return StoppingConfig()
    metric = _check_string(table, "metric", where)
    if len(metric.encode()) > 64:
        raise ConfigError(f"{where}.metric: must be at most 64 bytes, as reported metric names are (got {metric!r})")
    min_epochs = check_positive_int(table.get("min_epochs", 1), f"{where}.min_epochs")
    if "max_epochs" not in table:
        raise ConfigError(f"{where}.max_epochs: is required (the epochs a trial that is never stopped trains for)")
    max_epochs = check_positive_int(table["max_epochs"], f"{where}.max_epochs")
    if max_epochs < min_epochs:
        raise ConfigError(f"{where}.max_epochs: must be >= min_epochs (got max_epochs = {max_epochs}, "
                          f"min_epochs = {min_epochs})")
    eta = table.get("reduction_factor", 3)
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta) or eta <= 1:
        raise ConfigError(f"{where}.reduction_factor: must be a number > 1 (got {eta!r})")
    brackets = 0
    if "brackets" in table:
        if rule != "hyperband":
            raise ConfigError(f"{where}.brackets: only rule = \"hyperband\" has brackets (got rule = {rule!r})")
        brackets = check_positive_int(table["brackets"], f"{where}.brackets")
        most = max_brackets(min_epochs, max_epochs, eta)
        if brackets > most:
            raise ConfigError(f"{where}.brackets: at most {most} fit between min_epochs = {min_epochs} and "
                              f"max_epochs = {max_epochs} with reduction_factor = {eta:g} (got {brackets})")
    return StoppingConfig(rule, metric, min_epochs, max_epochs, float(eta), brackets)


# --- writing the resolved config back as TOML -------------------------------------------

def to_dict(config: Config) -> dict[str, Any]:
    """The resolved config as the tables of an experiment file (what :func:`to_toml` writes)."""
    e = config.experiment
    phases = []
    for phase in config.phases:
        table: dict[str, Any] = {"strategy": phase.strategy}
        if phase.name:
            table["name"] = phase.name
        if STRATEGIES[phase.strategy].sized_by_trials:
            table["trials"] = phase.trials
        if phase.repeats != config.experiment.repeats:
            table["repeats"] = phase.repeats
        for key in STRATEGIES[phase.strategy].options:
            if phase.options.get(key) is not None:
                table[key] = phase.options[key]
        phases.append(table)
    return {
        "experiment": {
            "name": e.name,
            "objective": e.objective,
            "direction": e.direction,
            "results": e.results,
            **({"seed": e.seed} if e.seed >= 0 else {}),
            "workdir": e.workdir,
            "max_initial_failures": e.max_initial_failures,
            "repeats": e.repeats,
            **({"resume": True} if e.resume else {}),
        },
        "space": config.space.describe(),
        "phase": phases,
        "workers": {k: getattr(config.workers, k) for k in WORKERS_KEYS},
        **({"stopping": _stopping_table(config.stopping)} if config.stopping.active else {}),
    }


def _stopping_table(stopping: StoppingConfig) -> dict[str, Any]:
    table = {k: getattr(stopping, k) for k in STOPPING_KEYS}
    if stopping.rule != "hyperband":
        del table["brackets"]
    return table


def to_toml(config: Config) -> str:
    """The resolved config as an experiment file that loads back to the same config."""
    data = to_dict(config)
    lines = ["[experiment]"]
    lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in data["experiment"].items()]
    lines += ["", "[space]"]
    lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in data["space"].items()]
    for table in data["phase"]:
        lines += ["", "[[phase]]"]
        for key, value in table.items():
            if key == "points":
                lines.append("points = [")
                lines += [f"  {toml_value(p)}," for p in value]
                lines.append("]")
            else:
                lines.append(f"{toml_key(key)} = {toml_value(value)}")
    lines += ["", "[workers]"]
    lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in data["workers"].items()]
    if "stopping" in data:
        lines += ["", "[stopping]"]
        lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in data["stopping"].items()]
    return "\n".join(lines) + "\n"
