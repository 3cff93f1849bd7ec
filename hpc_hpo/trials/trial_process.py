"""The child process that runs trials for a worker (see :class:`hpc_hpo.trials.executor.ProcessExecutor`).

It is started with ``spawn`` (never ``fork`` after MPI is initialised), without the MPI
launcher's variables, and never imports mpi4py. It loads the objective once, then serves
trials over a pipe until told to stop or its parent dies:

    parent -> child   (params, context)     run one trial
    child -> parent   ("epoch", n, metrics) any number, while the trial runs...
    parent -> child   ("verdict", stop)     ...each answered: True when the stopping rule stops the trial
    child -> parent   ("outcome", Outcome)  the trial ended
    parent -> child   None                  exit

Each trial's stdout and stderr (file descriptors 1 and 2, so TensorFlow's C++ logs too) go
to ``stdout.txt`` and ``stderr.txt`` in its working directory. SIGUSR1 (a timeout) or a
stopping verdict asks the running trial to stop early (``trial.should_stop()``); SIGINT is left to the worker.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import gc
import os
import signal
import sys
from pathlib import Path

from ..errors import ObjectiveImportError
from .objective import format_exception, load_objective

STDOUT_FILE = "stdout.txt"
STDERR_FILE = "stderr.txt"
PR_SET_PDEATHSIG = 1

_stop_requested = False


def _request_stop(signum, frame) -> None:
    global _stop_requested
    _stop_requested = True


def _is_stop_requested() -> bool:
    return _stop_requested


def _die_with_parent(parent_pid: int) -> None:
    """Let the kernel kill this process when the worker dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def resident_mb() -> float:
    """Resident memory of this process in MiB (NaN where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


@contextlib.contextmanager
def redirected_output(directory: Path):
    """Point file descriptors 1 and 2 at files in ``directory``; empty files are removed after."""
    files = [directory / STDOUT_FILE, directory / STDERR_FILE]
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    handles = [open(path, "wb") for path in files]  # noqa: SIM115 - closed below
    try:
        for fd, handle in zip((1, 2), handles, strict=True):
            os.dup2(handle.fileno(), fd)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)
        for handle, path in zip(handles, files, strict=True):
            handle.close()
            if path.stat().st_size == 0:
                path.unlink()
        with contextlib.suppress(OSError):
            directory.rmdir()  # only if the trial left nothing in it


def tidy_after_trial() -> None:
    """Give back what a trial left behind: the Keras session and garbage, when a framework is loaded.

    A full garbage collection costs ~10 ms in a process holding numpy and scipy: worth it
    after a model, not after every trial of a cheap objective.
    """
    if "tensorflow" in sys.modules or "keras" in sys.modules:
        from .frameworks import clear_session

        clear_session()
        gc.collect()
    elif "torch" in sys.modules or "jax" in sys.modules:
        gc.collect()


def _report(conn, epoch: int, metrics: dict) -> None:
    """Send a reported epoch to the worker and take its answer: stop now, or go on."""
    global _stop_requested
    conn.send(("epoch", epoch, metrics))
    try:
        kind, stop = conn.recv()
    except (EOFError, OSError):
        return  # the worker is gone; PR_SET_PDEATHSIG ends this process
    if kind == "verdict" and stop:
        _stop_requested = True


def main(conn, objective_spec: str, base_dir: str, parent_pid: int) -> None:
    """Entry point of the child: load the objective, then serve trials."""
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, _request_stop)
    try:
        objective = load_objective(objective_spec, base_dir)
    except ObjectiveImportError as exc:
        conn.send(("error", str(exc)))
        return
    except BaseException as exc:  # noqa: BLE001 - anything the objective's module does on import
        conn.send(("error", f"experiment.objective: importing {objective_spec!r} failed: "
                            f"{format_exception(exc).splitlines()[0]}"))
        return
    if "tensorflow" in sys.modules:
        from .frameworks import configure_devices

        configure_devices()
    conn.send(("ready", os.getpid()))
    global _stop_requested
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        params, context = job
        _stop_requested = False
        context = dataclasses.replace(context, reporter=lambda epoch, metrics: _report(conn, epoch, metrics),
                                      stop_requested=_is_stop_requested)
        with redirected_output(context.workdir):
            outcome = objective(params, context)
        tidy_after_trial()
        conn.send(("outcome", dataclasses.replace(outcome, memory_mb=resident_mb())))

