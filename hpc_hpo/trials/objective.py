"""The user's objective: finding it, calling it, and judging what it returns.

An objective is ``objective(params) -> float``, or ``objective(params, trial)`` where
``trial`` is a :class:`TrialContext`. It may return a dict with a ``"value"`` key and other
numeric metrics, which are stored in their own columns. Anything else (an exception, NaN,
inf, a string, a bool) makes the trial a ``failed`` row with a readable error.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ObjectiveImportError
from ..results.records import DONE, FAILED, TIMEOUT

#: Metric names are stored as fixed-length UTF-8 (SWMR allows nothing else): at most this many bytes.
MAX_METRIC_NAME = 64
#: Traceback frames kept in the error of a failed trial (the last ones, nearest the raise).
ERROR_FRAMES = 4


@dataclass(frozen=True)
class TrialContext:
    """What an objective may want to know about the trial it is running.

    ``workdir`` is this trial's own directory (PHS's ``worker_save_path``); it is created the
    first time it is used. ``gpus`` are the GPUs this trial may use, as the batch system
    numbers them (empty on CPU); inside the trial they are the only ones visible.
    :meth:`report` records metrics per epoch (the ``/epochs`` table of the results file), epochs
    counted from 0 as Keras counts them; :meth:`should_stop` says the trial is asked to end early
    (the stopping rule stopped it, or it ran out of time). ``max_epochs`` is what a trial that is
    never stopped trains for (``[stopping]``; None without a stopping rule).

    In a pbt phase a trial is a *segment* of ``member``'s training: train epochs ``start_epoch`` ..
    ``end_epoch - 1`` (of ``max_epochs`` in all), after restoring model and optimizer from ``restore_from`` (None
    for the member's first segment), and save them into ``checkpoint_dir`` before returning the member's current
    score. Outside pbt, ``member`` is None, ``start_epoch`` 0, ``end_epoch`` = ``max_epochs`` and both
    directories None.
    """

    trial_id: int
    params: Mapping[str, Any]
    rank: int
    host: str
    phase: int
    strategy: str
    experiment: str
    experiment_seed: int = field(repr=False, default=0)
    workdir_root: str = field(repr=False, default=".")
    gpus: tuple[str, ...] = ()
    max_epochs: int | None = None
    member: int | None = None
    start_epoch: int = 0
    end_epoch: int | None = None
    restore_from: str | None = None
    checkpoint_dir: str | None = None
    reporter: Callable[[int, dict[str, float]], None] | None = field(default=None, repr=False, compare=False)
    stop_requested: Callable[[], bool] | None = field(default=None, repr=False, compare=False)

    def report(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        """Record ``metrics`` (name -> number) of this trial after ``epoch`` (0 for the first); others are skipped.

        With a stopping rule, a report after one of the trial's rungs waits (milliseconds) for the
        rule's verdict: check :meth:`should_stop` right after it."""
        if self.reporter is None:
            return
        numbers = {}
        for name, value in metrics.items():
            number = _as_number(value)
            if isinstance(name, str) and 0 < len(name.encode()) <= MAX_METRIC_NAME and number is not None:
                numbers[name] = number
        self.reporter(int(epoch), numbers)

    def should_stop(self) -> bool:
        """True once the trial is asked to stop early: end training and return what you have."""
        return self.stop_requested is not None and self.stop_requested()

    @property
    def seed(self) -> int:
        """A seed of this trial's own, derived from the experiment seed and the trial id."""
        return int(np.random.SeedSequence([self.experiment_seed, self.trial_id]).generate_state(1)[0])

    @property
    def workdir(self) -> Path:
        path = Path(self.workdir_root) / f"trial_{self.trial_id:06d}"
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass(frozen=True)
class Outcome:
    """What one trial produced: a value and metrics, or an error message.

    ``timed_out`` marks a trial stopped at ``workers.trial_timeout``; ``memory_mb`` is the
    resident memory of the process that ran it, measured when it ended.
    """

    value: float | None
    metrics: dict[str, float]
    error: str = ""
    timed_out: bool = False
    memory_mb: float = float("nan")

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def status(self) -> str:
        return TIMEOUT if self.timed_out else FAILED if self.error else DONE


class Objective:
    """A loaded objective function that knows whether it wants the trial context."""

    def __init__(self, function: Callable[..., Any], spec: str):
        self.function = function
        self.spec = spec
        self.wants_context = _takes_two_args(function)

    def __call__(self, params: dict[str, Any], context: TrialContext) -> Outcome:
        try:
            raw = self.function(params, context) if self.wants_context else self.function(params)
        except (Exception, SystemExit) as exc:  # a failing objective is a row, never a crash
            return Outcome(None, {}, format_exception(exc, context))
        outcome = judge(raw)
        if outcome.error:
            return Outcome(None, outcome.metrics, f"{outcome.error}{_where(context)}")
        return outcome


#: Objectives this process already holds (``hpc_hpo.optimize`` was given the function): spec -> function.
_REGISTERED: dict[str, Callable[..., Any]] = {}


def register_objective(spec: str, function: Callable[..., Any]) -> None:
    """Let :func:`load_objective` hand out ``function`` for ``spec`` in this process instead of importing it."""
    _REGISTERED[spec] = function


def load_objective(spec: str, base_dir: str = ".") -> Objective:
    """Import ``package.module:function`` or ``path/to/file.py:function`` (or take the function registered for it).

    A file path is looked up relative to the experiment file's directory first, then to
    the current directory. Module paths are imported with both directories on ``sys.path``.
    """
    if spec in _REGISTERED:
        return Objective(_REGISTERED[spec], spec)
    target, _, name = spec.rpartition(":")
    where = "experiment.objective"
    try:
        if target.endswith(".py") or "/" in target:
            module = _import_file(target, base_dir, where, spec)
        else:
            for directory in (base_dir, str(Path.cwd())):
                if directory not in sys.path:
                    sys.path.insert(0, directory)
            module = importlib.import_module(target)
    except ObjectiveImportError:
        raise
    except Exception as exc:
        raise ObjectiveImportError(f"{where}: cannot import {spec!r} ({type(exc).__name__}: {_one_line(exc)})") from None
    function: Any = module
    for part in name.split("."):
        function = getattr(function, part, None)
        if function is None:
            raise ObjectiveImportError(f"{where}: {target!r} has no attribute {name!r} (got {spec!r})")
    if not callable(function):
        raise ObjectiveImportError(f"{where}: {spec!r} is not callable (got an object of type {type(function).__name__})")
    return Objective(function, spec)


def _import_file(target: str, base_dir: str, where: str, spec: str):
    candidates = [Path(target)] if Path(target).is_absolute() else [Path(base_dir) / target, Path.cwd() / target]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        tried = ", ".join(str(p) for p in dict.fromkeys(candidates))
        raise ObjectiveImportError(f"{where}: no such file {target!r} (looked at {tried}) (got {spec!r})")
    module_name = f"hpc_hpo_objective_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.path.insert(0, str(path.parent))  # let the file import its neighbours
    sys.modules[module_name] = module
    module_spec.loader.exec_module(module)
    return module


def _takes_two_args(function: Callable[..., Any]) -> bool:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return False
    positional = [
        p for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    has_varargs = any(p.kind == p.VAR_POSITIONAL for p in signature.parameters.values())
    return len(positional) >= 2 or has_varargs


def _as_number(value: Any) -> float | None:
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iuf":
        return float(value.reshape(()))
    # TensorFlow and PyTorch scalars, without importing either.
    for method in ("numpy", "item"):
        if hasattr(value, method) and type(value).__module__.split(".")[0] in ("tensorflow", "torch", "jax", "jaxlib"):
            return _as_number(getattr(value, method)())
    return None


def judge(raw: Any) -> Outcome:
    """Turn what an objective returned into an Outcome: a finite value, or an error."""

    def bad(reason: str, metrics: dict[str, float] | None = None) -> Outcome:
        return Outcome(None, metrics or {}, f"ObjectiveResultError: {reason}")

    metrics: dict[str, float] = {}
    if isinstance(raw, Mapping):
        if "value" not in raw:
            return bad(f"returned a dict without a 'value' key (keys: {sorted(map(str, raw))})")
        for key, item in raw.items():
            if key == "value":
                continue
            if not isinstance(key, str) or not key or len(key.encode()) > MAX_METRIC_NAME:
                return bad(f"metric names must be strings of 1 to {MAX_METRIC_NAME} bytes (got {key!r})")
            number = _as_number(item)
            if number is None:
                return bad(f"metric {key!r} is not a number (got {_short_repr(item)})")
            metrics[key] = number
        raw = raw["value"]
    value = _as_number(raw)
    if value is None:
        return bad(f"returned {_short_repr(raw)}, not a number (return a float, or a dict with a 'value' key)", metrics)
    if not math.isfinite(value):
        return bad(f"returned {value!r}; the value must be finite", metrics)
    return Outcome(value, metrics)


def format_exception(exc: BaseException, context: TrialContext | None = None) -> str:
    """Exception type and message, where it ran, then the last traceback frames."""
    lines = [f"{type(exc).__name__}: {_one_line(exc)}{_where(context)}"]
    frames = traceback.extract_tb(exc.__traceback__)[-ERROR_FRAMES:]
    if frames:
        lines.append("Traceback (most recent call last, last frames):")
        lines += [line.rstrip("\n") for line in traceback.format_list(frames)]
    return "\n".join(lines)


def _where(context: TrialContext | None) -> str:
    return f" (rank {context.rank} on {context.host})" if context is not None else ""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(text.split()) if text else "(no message)"


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
