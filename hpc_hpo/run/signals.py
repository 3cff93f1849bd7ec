"""What a rank does when the batch system or the user asks the job to stop.

SLURM sends a signal before the time limit (``--signal``), ``scancel`` and ``qdel`` send
SIGTERM, a user presses Ctrl-C, and ``mpirun`` forwards what it gets to every rank. The first
SIGTERM, SIGUSR1 or SIGINT a rank receives is a *stop request*: the rank notes it (and, when
an inline trial is running, ends that trial with :class:`TrialAbandoned`); the master then
stops dispatching, closes the results file with the running trials marked for a re-run, and
every rank exits with ``EXIT_RESUMABLE``. A second signal ends the rank at once (``on_second``);
the file is then recovered by the next ``--resume``.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

from ..errors import TrialAbandoned

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class StopRequest:
    """Installed once per process; ``signum`` is the first stop signal received (0: none)."""

    def __init__(self, on_second: Callable[[int], None]):
        self.signum = 0
        self.count = 0
        self.in_inline_trial = False  # set by the worker around an inline trial
        self.on_second = on_second

    def install(self) -> StopRequest:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)
        return self

    @property
    def requested(self) -> bool:
        return self.signum != 0

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def _handle(self, signum: int, frame) -> None:
        self.count += 1
        if self.count > 1:
            self.on_second(signum)
            return
        self.signum = signum
        if self.in_inline_trial:
            self.in_inline_trial = False
            raise TrialAbandoned
