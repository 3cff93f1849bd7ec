"""Shared helpers: write experiments, run hpc_hpo in a subprocess (with or without mpirun).

Every subprocess has a timeout and is killed with its whole process group when it runs
over, so a deadlock is a failed test, never a hung suite.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from hpc_hpo.results.lockfile import pid_alive

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent


def find_mpirun() -> str | None:
    local = BIN / "mpirun"
    return str(local) if local.exists() else shutil.which("mpirun")


#: Where each MPI tells a rank its number (Open MPI; MPICH's Hydra and other PMI launchers).
RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK")


@functools.cache
def mpi_flavour() -> str:
    """``"openmpi"`` or ``"mpich"``: whose ``mpirun`` the tests launch (the environment's: scripts/test.sh runs the
    suite with Open MPI, scripts/test_mpich.sh its MPI tests again with MPICH)."""
    mpirun = find_mpirun()
    if mpirun is None:
        return "none"
    version = subprocess.run([mpirun, "--version"], capture_output=True, text=True, timeout=30)
    return "openmpi" if "Open MPI" in version.stdout + version.stderr else "mpich"


def launcher_flags() -> list[str]:
    """More ranks than cores, no binding: Open MPI must be told; MPICH's Hydra does both by default."""
    return ["--oversubscribe", "--bind-to", "none"] if mpi_flavour() == "openmpi" else []


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", PYTHONUNBUFFERED="1")
    for name in ("HPC_HPO_MPI", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK"):
        env.pop(name, None)
    return env


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_command(cmd: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None) -> Completed:
    """Run ``cmd`` with the test environment plus ``env``; fail the test if it runs over ``timeout``."""
    proc = subprocess.Popen(cmd, cwd=cwd, env={**base_env(), **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"timed out after {timeout}s: {' '.join(cmd)}\nstdout:\n{out}\nstderr:\n{err}")
    # Open MPI's prterun ends each help message it prints (the MPI_ABORT box among them) with a NUL byte, which can
    # land at the start of the next line a rank printed: invisible on a terminal, but not what a line check expects.
    return Completed(proc.returncode, out.replace("\0", ""), err.replace("\0", ""))


def mpirun_command(ranks: int, args: list[str]) -> list[str]:
    mpirun = find_mpirun()
    if mpirun is None:
        pytest.fail("mpirun not found: install the test dependencies with scripts/test.sh")
    return [mpirun, "-n", str(ranks), *launcher_flags(), sys.executable, "-m", "hpc_hpo", *args]


def hpo(args: list[str], cwd: Path, ranks: int | None = None, timeout: float = 120,
        env: dict[str, str] | None = None) -> Completed:
    """``python -m hpc_hpo ARGS`` in one process, or under ``mpirun -n ranks``."""
    cmd = [sys.executable, "-m", "hpc_hpo", *args] if ranks is None else mpirun_command(ranks, args)
    return run_command(cmd, cwd, timeout, env)


def write_experiment(directory: Path, body: str, objective: str | None = None, name: str = "experiment.toml") -> Path:
    """Write an experiment file (and an ``objective.py`` next to it when given)."""
    directory.mkdir(parents=True, exist_ok=True)
    if objective is not None:
        (directory / "objective.py").write_text(textwrap.dedent(objective))
    path = directory / name
    path.write_text(textwrap.dedent(body))
    return path


def assert_real_image(path: Path) -> None:
    """A PNG a person can read: a real size, many colours, not a blank canvas."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= 500 and image.height >= 250, (path.name, image.size)
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    colours = len(np.unique(pixels[:: max(1, len(pixels) // 200_000)], axis=0))
    inked = float(np.mean(np.any(pixels < 235, axis=1)))
    assert colours >= 40, (path.name, colours)
    assert inked >= 0.03, (path.name, inked)


class CloseFails:
    """A real h5py file, except that closing it fails as a full disk makes it fail (HDF5 writes while it closes)."""

    def __init__(self, file):
        self._file = file

    def __getattr__(self, name):
        return getattr(self._file, name)

    def close(self):
        self._file.close()
        raise OSError(28, "No space left on device")


@pytest.fixture(autouse=True)
def _forget_killed_mpiruns():
    """After each test, remove the session directories (``/tmp/ompi.PID``) of mpiruns that no longer run.

    An mpirun killed with SIGKILL (the tests kill whole jobs on purpose) leaves its directory behind, named
    by its pid. Pids wrap around during a suite, and a later mpirun that gets the same pid finds it and fails
    with "The PMIx server's listener thread failed to start" (seen once in 460 tests).
    """
    yield
    for directory in Path(tempfile.gettempdir()).glob("ompi.*"):
        pid = directory.name.partition(".")[2]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(autouse=True)
def _restore_environment():
    """A worker set up inside the test process binds itself through os.environ (threads, GPUs):
    undo that after each test, so later subprocesses see the environment the suite started with."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
