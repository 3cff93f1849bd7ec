"""Checks of a results path before anything runs: a bad path costs seconds, not a job."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..errors import ConfigError


def check_results_path(path: str | Path, overwrite: bool, where: str = "experiment.results") -> Path:
    """Refuse a results path that cannot be written, before any trial starts."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ConfigError(f"{where}: is a directory, not a file (got '{path}')")
    if not directory.is_dir():
        raise ConfigError(f"{where}: directory '{directory}' does not exist; create it first (got '{path}')")
    try:  # os.access says yes to root even on read-only mounts; trying is the only sure test
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{where}: directory '{directory}' is not writable ({reason}) (got '{path}')") from None
    if path.exists() and not overwrite:
        raise ConfigError(
            f"{where}: '{path}' already exists; pass --resume to continue it, --overwrite to replace it, or "
            f"choose another --results "
            f"(got '{path}')"
        )
    return path
