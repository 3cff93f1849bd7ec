"""How a worker runs one trial: in its own process, or in a child process it supervises.

:class:`InlineExecutor` calls the objective in the worker: no overhead, easiest to debug.
:class:`ProcessExecutor` runs trials in a child process (:mod:`hpc_hpo.trials.trial_process`), so
that TensorFlow's GPU memory, which it never gives back, goes with the child, and a trial
that crashes, hangs or leaks cannot take the MPI job with it:

- the child is reused for up to ``max_trials_per_process`` trials, and replaced after a
  crash, a timeout, or when its resident memory passes ``max_process_memory_mb``. Its
  successor starts when it is handed its last planned trial, and loads the objective (TensorFlow:
  seconds) while that trial runs; an unplanned replacement starts at once and loads while the
  worker reports the result. A trial starts when its child has it (:attr:`ProcessExecutor.started`):
  waiting for a child still loading is not trial time;
- a child that has not loaded the objective ``startup_timeout`` seconds after it started (a
  hung file system, a GPU driver that does not answer) is killed: at set-up that is an error
  for the whole job, later the trial that waited for it fails, and the next trial starts a
  new child (``start_failures`` counts such failures in a row, for the worker to retire);
- a trial running past ``trial_timeout`` is asked to stop (SIGUSR1, ``trial.should_stop()``),
  killed after a short grace, and recorded as ``timeout``;
- a trial the stopping rule stops learns it in the answer to the report that crossed the rung:
  the same flag as the timeout's request (``trial.should_stop()``);
- a failed trial's error ends with the last lines of its ``stderr.txt``.

:func:`choose_executor` resolves ``executor = "auto"`` without importing the objective.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import importlib.util
import logging
import math
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from ..errors import ObjectiveImportError, StartupTimeoutError, TrialAbandoned
from .objective import Objective, Outcome, TrialContext, load_objective
from .trial_process import STDERR_FILE, main, resident_mb

log = logging.getLogger(__name__)

#: Modules whose import makes "auto" run trials in a child process.
FRAMEWORKS = ("tensorflow", "keras", "torch", "jax", "hpc_hpo.tf")
#: Lines of a failed trial's stderr kept at the end of its error message.
STDERR_TAIL_LINES = 15
#: Variables by which an MPI launcher tells a process it is a rank: a trial process is not one.
_LAUNCHER_PREFIXES = ("OMPI_", "PMIX_", "PMI_", "HYDRA_", "PALS_", "MPI_LOCALRANKID")
_KEEP = ("OMPI_ALLOW_RUN_AS_ROOT", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM")

#: Takes a reported epoch and its metrics; returns True when the trial must stop (the stopping rule's verdict).
Reporter = Callable[[int, dict], bool]
#: Asked while a trial runs in a child: True when the job is ending and the trial must be dropped.
Abandon = Callable[[], bool]
#: How often a supervising worker asks ``abandon`` (seconds).
ABANDON_POLL = 0.1


class InlineExecutor:
    """Runs each trial by calling the objective directly in this process."""

    def __init__(self, objective_spec: str, base_dir: str):
        self.objective: Objective = load_objective(objective_spec, base_dir)  # ObjectiveImportError if it cannot

    def run(self, params: dict[str, Any], context: TrialContext, report: Reporter | None = None,
            abandon: Abandon | None = None) -> Outcome:
        """``abandon`` is not asked: an inline trial is only ended by a signal (:class:`TrialAbandoned`);
        a trial that ``report`` says must stop sees ``trial.should_stop()`` turn true."""
        stopped = False

        def reporter(epoch: int, metrics: dict) -> None:
            nonlocal stopped
            if report is not None and report(epoch, metrics):
                stopped = True

        context = dataclasses.replace(context, reporter=reporter, stop_requested=lambda: stopped)
        outcome = self.objective(params, context)
        return dataclasses.replace(outcome, memory_mb=resident_mb())

    def close(self) -> None:
        pass


class _Child:
    """One trial process and our end of its pipe."""

    def __init__(self, ctx, objective_spec: str, base_dir: str):
        self.started = time.monotonic()
        self.conn, child_conn = ctx.Pipe()
        self.process = ctx.Process(target=main, args=(child_conn, objective_spec, base_dir, os.getpid()),
                                   name="hpc_hpo-trial", daemon=True)
        with _without_launcher_variables():
            self.process.start()
        child_conn.close()
        self.ready = False
        self.timed_out = False  # it did not load the objective in time
        self.trials = 0

    def wait_ready(self, timeout: float = 0.0) -> str:
        """Wait until the objective is loaded, at most ``timeout`` seconds after the child started
        (0: no limit); '' when it is, else why it is not (the child is killed if it ran out of time)."""
        if self.ready:
            return ""
        if timeout and not self.conn.poll(max(0.0, self.started + timeout - time.monotonic())):
            self.kill()
            self.timed_out = True
            return (f"TrialProcessStartTimeout: the trial process did not finish importing the objective within "
                    f"{timeout:g} s (workers.startup_timeout)")
        try:
            kind, detail = self.conn.recv()
        except (EOFError, OSError):
            self.process.join(5)
            return f"experiment.objective: the trial process exited ({_describe_exit(self.process.exitcode)}) " \
                   f"while importing the objective"
        if kind != "ready":
            return detail
        self.ready = True
        return ""

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the child to exit; kill it if it does not within ``timeout`` (at once if it never got ready:
        it is not listening, and may be hung while it imports)."""
        listening = self.ready or _has_message(self.conn)  # a child that said "ready" waits for its next job
        if self.process.is_alive() and listening:
            with contextlib.suppress(OSError, ValueError):
                self.conn.send(None)
            self.process.join(timeout)
        self.kill()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.conn.close()


class ProcessExecutor:
    """Runs trials in a supervised, reusable child process (see the module docstring)."""

    def __init__(self, objective_spec: str, base_dir: str, trial_timeout: float = 0.0,
                 max_trials_per_process: int = 10, max_process_memory_mb: float = 0.0, startup_timeout: float = 0.0):
        self.objective_spec = objective_spec
        self.base_dir = base_dir
        self.trial_timeout = trial_timeout
        #: Seconds between two questions to ``abandon`` while a trial runs (a worker that must act at a given
        #: moment of the trial, the look-ahead's refresh, asks more often).
        self.abandon_poll = ABANDON_POLL
        self.max_trials_per_process = max_trials_per_process
        self.max_process_memory_mb = max_process_memory_mb
        self.startup_timeout = startup_timeout
        self.processes_started = 0
        #: Trials in a row whose trial process could not start (failed to load the objective, or hung).
        self.start_failures = 0
        #: When the last trial was handed to a loaded child (``time.time()``): the trial's start.
        self.started: float | None = None
        self._ctx = multiprocessing.get_context("spawn")
        self._next: _Child | None = None  # the successor, loading while the child runs its last planned trial
        self._child: _Child | None = self._start()
        error = self._child.wait_ready(startup_timeout)
        if error:
            hung = self._child.timed_out
            self.close()
            raise (StartupTimeoutError if hung else ObjectiveImportError)(error)

    def _start(self) -> _Child:
        self.processes_started += 1
        return _Child(self._ctx, self.objective_spec, self.base_dir)

    def run(self, params: dict[str, Any], context: TrialContext, report: Reporter | None = None,
            abandon: Abandon | None = None) -> Outcome:
        """Run one trial in the child; raise :class:`TrialAbandoned` (the child killed) if ``abandon()`` says so."""
        child = self._child if self._child is not None else self._start()
        self._child = child
        self.started = None
        error = child.wait_ready(self.startup_timeout)
        if error:
            self.start_failures += 1
            self._retire()
            return Outcome(None, {}, f"{error} (rank {context.rank} on {context.host})")
        self.start_failures = 0
        child.trials += 1
        self.started = time.time()
        child.conn.send((params, context))
        if child.trials >= self.max_trials_per_process and self._next is None:
            self._next = self._start()  # it loads while this trial runs: the next trial need not wait for it
        outcome = self._supervise(child, context, report, abandon)
        if outcome.error:
            outcome = Outcome(None, outcome.metrics, outcome.error + _stderr_tail(context), outcome.timed_out,
                              outcome.memory_mb)
        if not child.process.is_alive() or child.trials >= self.max_trials_per_process or \
                (self.max_process_memory_mb and outcome.memory_mb > self.max_process_memory_mb):
            self._retire()
        return outcome

    def _supervise(self, child: _Child, context: TrialContext, report: Reporter | None,
                   abandon: Abandon | None = None) -> Outcome:
        started = time.monotonic()
        deadline = started + self.trial_timeout if self.trial_timeout else math.inf
        asked_to_stop = False
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            if abandon is not None:
                if abandon():
                    child.kill()
                    self._child = None  # no replacement: the worker is about to exit
                    raise TrialAbandoned
                remaining = min(remaining, self.abandon_poll)
            ready = wait([child.conn, child.process.sentinel], timeout=None if remaining == math.inf else remaining)
            if child.conn in ready:
                try:
                    message = child.conn.recv()
                except (EOFError, OSError):
                    ready = [child.process.sentinel]
                else:
                    if message[0] == "epoch":  # the child waits for the verdict before it goes on
                        stop = report is not None and report(message[1], message[2])
                        with contextlib.suppress(OSError, ValueError):
                            child.conn.send(("verdict", bool(stop)))
                        continue
                    outcome = message[1]
                    if asked_to_stop:  # it stopped when asked, after its time was up
                        return Outcome(None, outcome.metrics, self._timeout_error(context), True, outcome.memory_mb)
                    return outcome
            if child.process.sentinel in ready:
                child.process.join(5)
                return Outcome(None, {}, f"TrialProcessDied: the trial process {_describe_exit(child.process.exitcode)}"
                                         f" (rank {context.rank} on {context.host})")
            if time.monotonic() >= deadline:
                if not asked_to_stop:  # ask politely first: a Keras callback can end training cleanly
                    asked_to_stop = True
                    with contextlib.suppress(OSError):
                        os.kill(child.process.pid, signal.SIGUSR1)
                    deadline = time.monotonic() + min(30.0, max(0.5, 0.05 * self.trial_timeout))
                    continue
                child.kill()
                return Outcome(None, {}, self._timeout_error(context), True)

    def _timeout_error(self, context: TrialContext) -> str:
        return (f"TrialTimeout: ran longer than workers.trial_timeout = {self.trial_timeout:g} s "
                f"(rank {context.rank} on {context.host})")

    def _retire(self) -> None:
        """End the current child; its successor takes over (started during its last planned trial, or now, to load
        while we go on)."""
        if self._child is not None:
            self._child.stop()
        self._child, self._next = (self._next if self._next is not None else self._start()), None

    def close(self) -> None:
        for child in (self._child, self._next):
            if child is not None:
                child.stop()
        self._child = self._next = None


def choose_executor(executor: str, objective_spec: str, base_dir: str) -> str:
    """"process" or "inline" for ``executor = "auto"``: process when the objective's module
    imports a deep-learning framework. Reads the module's source; never imports it."""
    if executor != "auto":
        return executor
    source = _objective_source(objective_spec, base_dir)
    if source is None:
        return "inline"
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return "inline"  # loading it will report the error
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        if any(name == f or name.startswith(f + ".") for name in names for f in FRAMEWORKS):
            return "process"
    return "inline"


def _objective_source(objective_spec: str, base_dir: str) -> str | None:
    target = objective_spec.rpartition(":")[0]
    try:
        if target.endswith(".py") or "/" in target:
            candidates = [Path(target)] if Path(target).is_absolute() else [Path(base_dir) / target, Path(target)]
            path = next((p for p in candidates if p.is_file()), None)
        else:
            spec = importlib.util.find_spec(target)
            path = Path(spec.origin) if spec is not None and spec.origin else None
        return path.read_text(encoding="utf-8") if path is not None and path.suffix == ".py" else None
    except (ImportError, OSError, ValueError, UnicodeDecodeError):
        return None


def _stderr_tail(context: TrialContext) -> str:
    path = Path(context.workdir_root) / f"trial_{context.trial_id:06d}" / STDERR_FILE
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 8192))
            lines = handle.read().decode("utf-8", "replace").splitlines()[-STDERR_TAIL_LINES:]
    except OSError:
        return ""
    return ("\nlast lines of stderr:\n" + "\n".join(lines)) if any(line.strip() for line in lines) else ""


def _has_message(conn) -> bool:
    try:
        return conn.poll(0)
    except (OSError, ValueError):
        return False


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        return f"was killed by signal {-code} ({name})"
    return f"exited with code {code}"


@contextlib.contextmanager
def _without_launcher_variables():
    """Hide the MPI launcher's variables from a child while it starts: it must not join the job."""
    hidden = {name: value for name, value in os.environ.items()
              if name.startswith(_LAUNCHER_PREFIXES) and name not in _KEEP}
    for name in hidden:
        del os.environ[name]
    try:
        yield
    finally:
        os.environ.update(hidden)
