"""Rank-aware logging: ``[r03 12:00:01] trial 17 done 0.92 in 41.2s``."""

from __future__ import annotations

import logging
import sys


def setup_logging(rank: int, level: int) -> None:
    """Send hpc_hpo's log records to stderr, each line tagged with this rank."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"[r{rank:02d} %(asctime)s] %(message)s", datefmt="%H:%M:%S"))
    logger = logging.getLogger("hpc_hpo")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def levels(verbosity: int) -> tuple[int, int]:
    """Log levels (master, workers) for ``-q`` (-1), default (0), ``-v`` (1) and ``-vv`` (2)."""
    master = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}.get(min(verbosity, 1), logging.INFO)
    workers = logging.DEBUG if verbosity >= 2 else logging.INFO if verbosity == 1 else logging.WARNING
    return master, workers
