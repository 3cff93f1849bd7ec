"""How master and workers talk: over MPI, or inside one process when there is one rank.

This is the only module that imports mpi4py, and only when a run starts under an MPI
launcher; importing hpc_hpo never initialises MPI. The master and the workers talk to a
:class:`Comm`, so the same loops run over MPI (:class:`MpiComm`) or in one process
(:class:`LocalComm`, which hands each message straight to an in-process worker).

Nobody blocks in a busy receive: Open MPI busy-polls inside a blocking ``recv`` and burns a
core while the workers train. Waiting is a matched probe (``improbe``, asked twice when the first finds
nothing: :meth:`MpiComm._probe`) plus a short back-off sleep.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping

from .protocol import Epoch, Message, decode, encode

log = logging.getLogger(__name__)

#: Environment variables set by MPI launchers (mpirun/mpiexec of Open MPI, MPICH, Intel MPI,
#: MVAPICH, Cray PALS, and srun with PMI or PMIx). Any of them means "start MPI".
LAUNCHER_HINTS = (
    "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK", "MV2_COMM_WORLD_SIZE", "PALS_RANKID",
)

MASTER = 0
#: Seconds a rank waits between writing its last lines and aborting the job: the launcher stops forwarding output
#: once it sees the abort, and MPICH's mpiexec lost the line saying why in about one run of ten.
ABORT_GRACE = 0.2

#: Give up the CPU for a moment (sched_yield where the platform has it, as on Linux).
_yield = getattr(os, "sched_yield", lambda: time.sleep(0))


class Backoff:
    """Waits between polls: yields for ``spin`` seconds, then sleeps that double up to ``max_sleep``.

    Yielding keeps the reply latency at microseconds while messages stream in; the sleeps
    keep an idle rank near 0% CPU (about ``1 / max_sleep`` wake-ups a second).
    """

    def __init__(self, spin: float = 0.0002, first_sleep: float = 50e-6, max_sleep: float = 0.002):
        self.spin = spin
        self.first_sleep = first_sleep
        self.max_sleep = max_sleep
        self.reset()

    def reset(self) -> None:
        """A message arrived: the next wait starts with yields again."""
        self._since: float | None = None
        self._sleep = self.first_sleep

    @property
    def idle_for(self) -> float:
        """Seconds since the first wait after the last reset."""
        return 0.0 if self._since is None else time.monotonic() - self._since

    def wait(self) -> None:
        now = time.monotonic()
        if self._since is None:
            self._since = now
        if now - self._since < self.spin:
            _yield()
            return
        time.sleep(self._sleep)
        self._sleep = min(self._sleep * 2.0, self.max_sleep)


class Comm:
    """The interface both drivers use. Rank 0 is the master."""

    rank: int = 0
    size: int = 1
    #: True when a message to the worker runs it at once, in this process (one process plays both roles).
    in_process: bool = False

    @property
    def worker_ranks(self) -> list[int]:
        return list(range(1, self.size))

    def send(self, message: Message, dest: int) -> None:
        """Send ``message``; may wait until ``dest`` receives it if it is large. Use for ranks that listen."""
        raise NotImplementedError

    def post(self, message: Message, dest: int) -> None:
        """Send ``message`` without ever waiting for ``dest`` (which may be hung): for start-up."""
        self.send(message, dest)

    def poll(self) -> tuple[int, Message] | None:
        """(source, message) if one is waiting, else None; never blocks."""
        raise NotImplementedError

    def abort(self, code: int) -> None:
        """End every rank at once; used when the framework itself fails."""
        os._exit(code)

    def close(self) -> None:
        pass


class LocalComm(Comm):
    """One process plays master and worker: a message to the worker is handled at once.

    ``handler`` is the in-process worker's ``handle(message)``; the worker answers through
    :meth:`reply`, and its answers queue up for the master's next ``poll``; an ``Epoch`` goes to
    ``urgent`` at once when the master set it (the trial waits for the stopping rule's verdict). The
    in-process worker counts as rank 0.
    """

    in_process = True

    def __init__(self, finalize: Callable[[], None] | None = None):
        self.rank, self.size = 0, 1
        self.handler: Callable[[Message], None] | None = None
        self.urgent: Callable[[Message], None] | None = None
        self._replies: deque[Message] = deque()
        self._finalize = finalize

    @property
    def worker_ranks(self) -> list[int]:
        return [0]

    def reply(self, message: Message) -> None:
        """The in-process worker's way to answer the master."""
        if self.urgent is not None and type(message) is Epoch:
            self.urgent(message)
        else:
            self._replies.append(message)

    def send(self, message: Message, dest: int) -> None:
        self.handler(message)

    def poll(self) -> tuple[int, Message] | None:
        return (0, self._replies.popleft()) if self._replies else None

    def close(self) -> None:
        if self._finalize is not None:
            self._finalize()


class MpiComm(Comm):
    """Messages over ``MPI.COMM_WORLD``: pickled tuples with the message tag as MPI tag."""

    def __init__(self, MPI):  # noqa: N803 - the module, as mpi4py names it
        self._MPI = MPI
        self._comm = MPI.COMM_WORLD
        self.rank = self._comm.Get_rank()
        self.size = self._comm.Get_size()
        self._status = MPI.Status()
        self._posted: list = []  # requests of posted messages not yet received

    def send(self, message: Message, dest: int) -> None:
        tag, payload = encode(message)
        self._comm.send(payload, dest=dest, tag=tag)

    def post(self, message: Message, dest: int) -> None:
        """A non-blocking send: a message above MPI's eager limit (a few KiB between ranks of one node)
        would otherwise wait until a rank that may be hung receives it."""
        tag, payload = encode(message)
        self._posted.append(self._comm.isend(payload, dest=dest, tag=tag))

    def poll(self) -> tuple[int, Message] | None:
        if self._posted:
            self._posted = [request for request in self._posted if not request.Test()]
        matched = self._probe()
        if matched is None:
            return None
        return self._status.Get_source(), decode(self._status.Get_tag(), matched.recv())

    def _probe(self):
        """A matched probe for any message, asked twice when the first finds none: Open MPI and MPICH move a
        message that arrived since the last call into their queue during a probe, but match it only at the
        next one. Asked once between sleeps, every message waited a sleep more than it needed (a message
        to a rank polling every 2 ms: 3.2 ms on average instead of 1.1, measured with both MPIs)."""
        MPI = self._MPI  # noqa: N806
        matched = self._comm.improbe(MPI.ANY_SOURCE, MPI.ANY_TAG, self._status)
        if matched is None:
            matched = self._comm.improbe(MPI.ANY_SOURCE, MPI.ANY_TAG, self._status)
        return matched

    def abort(self, code: int) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                stream.flush()
        time.sleep(ABORT_GRACE)
        self._comm.Abort(code)

    def close(self) -> None:
        """End MPI on this rank once every rank has come here, dropping the messages nobody will read.

        MPICH (4.1 on) fails ``MPI_Finalize`` on a rank whose queue still holds a message: a Join that came
        after the master had already refused another rank's, say. So each rank enters a barrier and
        keeps receiving (and discarding) until every rank is in it; a rank blocked sending a large
        message to this one is freed by the same receives. Open MPI's ``MPI_Finalize`` waits for every
        rank anyway, so nothing here waits longer than before.
        """
        MPI = self._MPI  # noqa: N806
        if not MPI.Is_initialized() or MPI.Is_finalized():
            return
        dropped = self._drain_until_all_close()
        if dropped:
            log.debug("dropped %d message(s) that came after the end of the run (tags %s)", len(dropped), dropped)
        try:
            MPI.Finalize()
        except MPI.Exception as exc:  # a message that came in after the barrier: the run is over, it ends anyway
            log.debug("MPI_Finalize: %s", " ".join(str(exc).split()))

    def _drain_until_all_close(self) -> list[int]:
        """Receive without reading until every rank has entered the closing barrier; the tags received."""
        barrier = self._comm.Ibarrier()
        backoff = Backoff(spin=0.001, max_sleep=0.05)
        tags = []
        while True:
            everyone = barrier.Test()  # tested before draining: what was sent before the barrier is taken below
            while (matched := self._probe()) is not None:
                tags.append(self._status.Get_tag())
                matched.recv()
                backoff.reset()
            if self._posted:
                self._posted = [request for request in self._posted if not request.Test()]
            if everyone:
                return tags
            backoff.wait()


def launched_by_mpi(environ: Mapping[str, str] | None = None) -> bool:
    """Whether an MPI launcher started this process (``HPC_HPO_MPI=0/1`` overrides)."""
    environ = os.environ if environ is None else environ
    forced = environ.get("HPC_HPO_MPI")
    if forced is not None:
        return forced.strip().lower() not in ("0", "false", "no", "")
    return any(name in environ for name in LAUNCHER_HINTS)


def init_mpi():
    """Initialise MPI through mpi4py and return the ``MPI`` module."""
    import mpi4py

    mpi4py.rc.initialize = False
    mpi4py.rc.finalize = False
    from mpi4py import MPI

    if not MPI.Is_initialized():
        MPI.Init_thread(MPI.THREAD_SERIALIZED)
    return MPI


def start_mpi_for_this_process() -> None:
    """Start MPI now when a launcher started this process, and end it when the interpreter exits.

    :func:`hpc_hpo.optimize` does this before it checks its input: a rank that then exits with the
    error waits in ``MPI_Finalize`` until every rank has reached its own (and printed its line); a
    process that never started MPI and exits non-zero makes ``mpirun`` kill the ranks still printing.
    """
    if launched_by_mpi():
        MPI = init_mpi()  # noqa: N806
        atexit.register(lambda: MPI.Is_finalized() or MPI.Finalize())


def open_comm() -> Comm:
    """An MpiComm when launched with several ranks, else a LocalComm (give it a handler)."""
    if not launched_by_mpi():
        return LocalComm()
    MPI = init_mpi()  # noqa: N806
    if MPI.COMM_WORLD.Get_size() > 1:
        return MpiComm(MPI)
    return LocalComm(finalize=MPI.Finalize)
