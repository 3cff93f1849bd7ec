"""Rank-aware logging: ``[r03 12:00:01] trial 17 done 0.92 in 41.2s``."""

from __future__ import annotations

import logging
import sys


class _StatusLineHandler(logging.StreamHandler):
    """A stderr handler that lifts the master's progress bar (if one is shown) out of a log line's way."""

    status_line = None  # an object with clear() and redraw(), set by the progress bar

    def emit(self, record: logging.LogRecord) -> None:
        line = _StatusLineHandler.status_line
        if line is not None:
            line.clear()
        super().emit(record)
        if line is not None:
            line.redraw()


def set_status_line(line) -> None:
    """Show ``line`` (a progress bar) below the log lines, or stop (None)."""
    _StatusLineHandler.status_line = line


def setup_logging(rank: int, level: int) -> None:
    """Send hpc_hpo's log records to stderr, each line tagged with this rank."""
    handler = _StatusLineHandler(sys.stderr)
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


def print_error(message: str) -> None:
    """The one line a user sees for bad input or a failed run: ``hpc_hpo: error: <message>`` on stderr.

    One write, newline included: ``print`` writes the text and the newline separately when output is
    unbuffered, and MPICH's Hydra forwards each write as it comes, so the lines of several ranks could
    run into one another."""
    sys.stderr.write(f"hpc_hpo: error: {message}\n")
    sys.stderr.flush()
