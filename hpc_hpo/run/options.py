"""What a run is asked to do besides the experiment itself: the ``run`` command line, or ``optimize``'s keywords."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .progress import ProgressInterval


@dataclass(frozen=True)
class RunOptions:
    """What the ``run`` command line asks for (``config``: an experiment already built, by :func:`hpc_hpo.optimize`)."""

    config_path: str | None = None
    config: Any = None  # an experiment already built (a Config): instead of config_path
    results: str | None = None
    seed: int | None = None
    trials: int | None = None
    overwrite: bool = False
    resume: bool = False
    force: bool = False
    time_limit: float | None = None
    time_margin: float = 60.0
    progress_every: ProgressInterval = ProgressInterval()  # seconds or trials between progress lines
    progress: str = "auto"  # "bar" on a terminal, "lines" in a batch log, "auto": bar if stderr is a terminal
    flush_interval: float = 0.1
    startup_timeout: float | None = None  # overrides workers.startup_timeout


@dataclass(frozen=True)
class Ended:
    """How a run ended on this rank: the exit code (see :mod:`hpc_hpo.errors`), and why when it did not finish
    (the one-line error, or what stopped it), and on the master the results file it wrote."""

    code: int
    reason: str = ""
    results: Path | None = None
