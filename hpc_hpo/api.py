"""``hpc_hpo.optimize``: a search started from Python, with the same schema as the experiment file.

The keywords are the experiment file's tables and keys (``space``, ``phases`` for the
``[[phase]]`` tables, ``workers``, and every key of ``[experiment]``), so both front ends
build one :class:`hpc_hpo.config.Config` and store it in the results file as TOML. Run the
script with ``mpirun -n 9 python search.py`` (rank 0 the master, the others workers) or with
``python search.py`` (one process). Every rank calls ``optimize``; rank 0 gets the best trial,
the other ranks ``None``.

The objective may be a function of the script itself. Each rank has it already, so an inline
worker calls it directly; a trial process (``executor = "process"``) imports the script by its
path, which is why the call to ``optimize`` belongs under ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import Config, parse_config
from .errors import EXIT_OK, EXIT_RESUMABLE, EXIT_USAGE, ConfigError, HpoError, SearchStoppedError
from .results.layout import param_column
from .trials.objective import register_objective

#: Keys of ``[experiment]`` that ``optimize`` takes as keywords.
EXPERIMENT_KEYWORDS = ("name", "direction", "results", "seed", "workdir", "max_initial_failures", "repeats", "resume")


@dataclass(frozen=True)
class Trial:
    """The best trial of a search, as ``optimize`` returns it on rank 0."""

    trial_id: int
    value: float
    params: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    results: Path | None = None  # the results file that holds it, with every other trial


def optimize(objective: Callable[..., Any] | str, *, space: Mapping[str, Any], phases: Sequence[Mapping[str, Any]],
             workers: Mapping[str, Any] | None = None, stopping: Mapping[str, Any] | None = None,
             overwrite: bool = False, force: bool = False, time_limit: float | None = None, time_margin: float = 60.0,
             startup_timeout: float | None = None,
             progress: str = "auto", verbose: int = 0, quiet: bool = False, **experiment: Any) -> Trial | None:
    """Run a search; the best finished trial on rank 0 (None if none succeeded), None on the other ranks.

    ``objective``: a function (``objective(params)`` or ``objective(params, trial)``, as in an experiment
    file) or a ``"module:function"`` / ``"file.py:function"`` string. ``space``, ``phases``, ``workers`` and
    ``stopping`` are the experiment file's ``[space]``, ``[[phase]]``, ``[workers]`` and ``[stopping]`` tables;
    the other keywords of ``[experiment]`` (``name``, ``direction``, ``results``, ``seed``, ``workdir``, ``max_initial_failures``,
    ``repeats``, ``resume``) are keywords too. ``overwrite``, ``force``, ``time_limit``, ``time_margin``,
    ``startup_timeout``, ``progress``, ``verbose`` and ``quiet`` do what the ``run`` command's flags do.

    Raises :class:`hpc_hpo.ConfigError` for bad input (the same one line as the command line, on every
    rank), :class:`hpc_hpo.SearchStoppedError` when the search stopped resumably, :class:`hpc_hpo.HpoError` when it failed.
    """
    from .run.comm import start_mpi_for_this_process

    start_mpi_for_this_process()  # first: so that bad input is reported on every rank before any exits
    config = _config(objective, space, phases, workers, experiment, stopping)
    from .run.launch import launch
    from .run.options import RunOptions
    from .run.progress import ProgressInterval

    options = RunOptions(config=config, overwrite=overwrite, resume=bool(experiment.get("resume", False)),
                         force=force, time_limit=time_limit, time_margin=time_margin, progress=progress,
                         progress_every=ProgressInterval(), startup_timeout=startup_timeout)
    ended, rank = launch(options, -1 if quiet else verbose, finalize=False)
    if ended.code == EXIT_USAGE:
        raise ConfigError(ended.reason)
    if ended.code == EXIT_RESUMABLE:
        raise SearchStoppedError(f"{ended.reason}; call optimize again with resume=True to go on")
    if ended.code != EXIT_OK:
        raise HpoError(ended.reason or f"the search failed (exit code {ended.code})")
    return _best(ended.results) if rank == 0 else None


def _config(objective: Callable[..., Any] | str, space: Mapping[str, Any], phases: Sequence[Mapping[str, Any]],
            workers: Mapping[str, Any] | None, experiment: dict[str, Any],
            stopping: Mapping[str, Any] | None = None) -> Config:
    """The experiment as the file would give it; validated here, identically on every rank."""
    unknown = sorted(set(experiment) - set(EXPERIMENT_KEYWORDS))
    if unknown:
        raise ConfigError(f"optimize: unknown keyword '{unknown[0]}' (allowed besides objective, space, phases, "
                          f"workers, stopping and the run options: {', '.join(EXPERIMENT_KEYWORDS)})")
    script = _main_script()
    base_dir = str(script.parent) if script else str(Path.cwd())
    spec = objective if isinstance(objective, str) else _spec(objective, script, workers or {})
    table: dict[str, Any] = {"objective": spec, **{k: v for k, v in experiment.items() if v is not None}}
    if not isinstance(phases, Sequence) or isinstance(phases, (str, bytes)):
        raise ConfigError(f"optimize: phases must be a list of tables, as [[phase]] in a file (got {phases!r})")
    data: dict[str, Any] = {"experiment": table, "space": space, "phase": list(phases)}
    if workers is not None:
        data["workers"] = workers
    if stopping is not None:
        data["stopping"] = stopping
    if not isinstance(objective, str) and not _importable(objective) and (workers or {}).get("executor", "auto") == "auto":
        data["workers"] = {**(workers or {}), "executor": "inline"}  # only this process can call it
    name = script.stem if script else "search"
    config = parse_config(data, base_dir=base_dir, source=str(script or ""), default_name=name)
    if not isinstance(objective, str):
        register_objective(spec, objective)
    return config


def _main_script() -> Path | None:
    """The script being run (``python search.py``), or None (an interactive session)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return Path(path).resolve() if path else None


def _spec(function: Callable[..., Any], script: Path | None, workers: Mapping[str, Any]) -> str:
    """How a trial process finds ``function``: ``"/path/script.py:name"`` or ``"module:name"``."""
    if not callable(function):
        raise ConfigError(f"optimize: objective must be a function or a 'module:function' string (got {function!r})")
    name = getattr(function, "__qualname__", getattr(function, "__name__", ""))
    module = getattr(function, "__module__", None)
    importable = _importable(function)
    spec = f"{script}:{name}" if module == "__main__" else f"{module}:{name}"
    if not importable and workers.get("executor") == "process":
        raise ConfigError(f"optimize: objective: a trial process imports the objective by name, and {name or function!r} "
                          f"cannot be (a lambda, a function defined inside another, or one typed in an interactive "
                          f"session); define it at the top of the script, or use executor = \"inline\"")
    return spec if importable else f"{script or Path.cwd() / 'interactive'}:{_safe_name(name)}"


def _importable(function: Callable[..., Any]) -> bool:
    """Whether a trial process can import ``function`` by name (not a lambda, not a nested function, not typed in
    an interactive session)."""
    name = getattr(function, "__qualname__", getattr(function, "__name__", "")) or "<"
    module = getattr(function, "__module__", None)
    return "<" not in name and bool(module) and (module != "__main__" or _main_script() is not None)


def _safe_name(name: str) -> str:
    """A function name the experiment file's rule accepts, for an objective that only this process can call."""
    cleaned = "".join(ch if ch.isalnum() or ch in "_." else "_" for ch in name).strip("._") or "objective"
    return cleaned if not cleaned[0].isdigit() else f"f_{cleaned}"


def _best(results: Path | None) -> Trial | None:
    from .results.reader import best_row, read_results

    if results is None:
        return None
    stored = read_results(results)
    best = best_row(stored)
    if best is None:
        return None
    params = {name: best[param_column(name)] for name in stored.param_names}
    metrics = {name: best[f"metric_{name}"] for name in stored.metric_names if not math.isnan(best[f"metric_{name}"])}
    return Trial(int(best["trial_id"]), float(best["value"]), params, metrics, Path(results))
