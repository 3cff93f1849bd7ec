"""Where the checkpoints of pbt segments live, and what they take: ``<workdir>/checkpoints/trial_NNNNNN/``.

A segment saves into its own directory (``trial.checkpoint_dir``) and a later segment restores from it
(``trial.restore_from``), read-only, so an exploit copies nothing. The worker empties a segment's directory before
the segment runs (a re-run after a kill starts clean) and measures it after; the master removes the ones the
population no longer needs (:meth:`hpc_hpo.search.pbt.Population.removable`). The workdir is on the shared file
system, so every node sees every checkpoint.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CHECKPOINTS = "checkpoints"


def checkpoint_dir(workdir: str | Path, trial_id: int) -> Path:
    """The checkpoint directory of trial ``trial_id``."""
    return Path(workdir) / CHECKPOINTS / f"trial_{trial_id:06d}"


def usable(path: Path) -> bool:
    """A directory that holds at least one file (anywhere below it)."""
    if not path.is_dir():
        return False
    return any(files for _, _, files in os.walk(path))


def size_mb(path: Path) -> float:
    """Megabytes of the files under ``path`` (0 if there is none)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name), follow_symlinks=False).st_size
            except OSError:
                continue
    return total / 1e6


def prepare(path: Path) -> None:
    """An empty directory at ``path`` (what an earlier attempt left there is removed)."""
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)


def remove(workdir: str | Path, trial_ids: list[int]) -> None:
    """Remove the checkpoints of ``trial_ids`` (those already gone are skipped)."""
    for trial_id in trial_ids:
        shutil.rmtree(checkpoint_dir(workdir, trial_id), ignore_errors=True)


def clear(workdir: str | Path) -> None:
    """Remove every checkpoint under ``workdir`` (a new results file starts without those of an old one)."""
    shutil.rmtree(Path(workdir) / CHECKPOINTS, ignore_errors=True)


def disk_use(workdir: str | Path) -> tuple[int, float]:
    """(checkpoints on disk, their megabytes) under ``workdir``."""
    root = Path(workdir) / CHECKPOINTS
    if not root.is_dir():
        return 0, 0.0
    directories = [p for p in root.iterdir() if p.is_dir()]
    return len(directories), sum(size_mb(p) for p in directories)
