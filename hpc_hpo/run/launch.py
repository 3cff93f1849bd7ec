"""Starting a run on this rank the same way from the command line and from Python (:func:`hpc_hpo.optimize`).

MPI is started when an MPI launcher started this process (else one process plays master and
worker); logging is set up with the rank in every line; rank 0 runs the job
(:mod:`hpc_hpo.run.job`), every other rank serves it (:mod:`hpc_hpo.run.worker`). An error in
hpc_hpo itself on any rank logs its traceback and ends every rank (``MPI_Abort``), so none hangs.
"""

from __future__ import annotations

import atexit
import logging

from ..errors import EXIT_FAILED, EXIT_INTERRUPTED
from ..logs import levels, setup_logging
from ..trials.devices import local_place
from .comm import LocalComm, open_comm
from .job import run_master
from .options import Ended, RunOptions
from .worker import Worker, run_worker

log = logging.getLogger(__name__)


def launch(options: RunOptions, verbosity: int = 0, finalize: bool = True) -> tuple[Ended, int]:
    """Run on this rank; (how it ended, this rank). ``verbosity``: -1 quiet, 0, 1 (-v), 2 (-vv).

    ``finalize``: end MPI when the run ends (the command line); else at the interpreter's exit, so that
    a script may go on after :func:`hpc_hpo.optimize` returns.
    """
    comm = open_comm()
    local_worker = None
    if isinstance(comm, LocalComm):  # one process: the master talks to an in-process worker
        local_worker = Worker(0, send=comm.reply)
        comm.handler = local_worker.handle
        local_worker.join(local_place(0))
    master_level, worker_level = levels(verbosity)
    setup_logging(comm.rank, master_level if comm.rank == 0 else worker_level)
    try:
        ended = run_master(comm, options, local_worker) if comm.rank == 0 else run_worker(comm)
    except KeyboardInterrupt:
        log.warning("interrupted; the results file holds every trial finished so far")
        if comm.size > 1:
            comm.abort(EXIT_INTERRUPTED)
        ended = Ended(EXIT_INTERRUPTED, "interrupted")
    except Exception:
        log.critical("internal error on rank %d; aborting all ranks", comm.rank, exc_info=True)
        comm.abort(EXIT_FAILED)
        return Ended(EXIT_FAILED, "internal error"), comm.rank
    finally:
        if local_worker is not None:
            local_worker.close()
    if finalize:
        comm.close()
    elif not _close_registered:
        _register_close(comm)
    return ended, comm.rank


_close_registered = False


def _register_close(comm) -> None:
    global _close_registered
    _close_registered = True
    atexit.register(comm.close)
