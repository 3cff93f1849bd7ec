"""How master and workers talk: in one process, and over a real mpirun."""

from __future__ import annotations

import sys
import textwrap
import time

from hpc_hpo.run.comm import Backoff, LocalComm, launched_by_mpi
from hpc_hpo.run.protocol import Bye, Stop, Task

from conftest import base_env, find_mpirun, launcher_flags, run_command


def test_local_comm_hands_a_message_to_the_worker_at_once_and_queues_its_answers():
    comm = LocalComm()
    seen = []

    def worker(message):
        seen.append(message)
        comm.reply(Bye(0))
        comm.reply(Bye(1))

    comm.handler = worker
    assert comm.in_process and comm.worker_ranks == [0] and comm.poll() is None
    comm.send(Stop(3), 0)
    assert seen == [Stop(3)]
    assert comm.poll() == (0, Bye(0)) and comm.poll() == (0, Bye(1)) and comm.poll() is None
    comm.post(Task(1, {}, 1, "random"), 0)  # post is send for an in-process worker
    assert seen[-1] == Task(1, {}, 1, "random")


def test_backoff_yields_first_then_sleeps_longer_and_longer_up_to_its_cap():
    backoff = Backoff(spin=0.0, first_sleep=0.001, max_sleep=0.004)
    sleeps = []
    for _ in range(5):
        started = time.perf_counter()
        backoff.wait()
        sleeps.append(backoff._sleep)
        assert time.perf_counter() >= started
    assert sleeps == [0.002, 0.004, 0.004, 0.004, 0.004]
    assert backoff.idle_for > 0
    backoff.reset()
    assert backoff.idle_for == 0.0 and backoff._sleep == 0.001


def test_an_mpi_launcher_is_recognised_by_its_variables_and_can_be_overridden():
    assert launched_by_mpi({"OMPI_COMM_WORLD_SIZE": "4"}) and launched_by_mpi({"PMI_RANK": "0"})
    assert launched_by_mpi({"PMIX_RANK": "1"}) and launched_by_mpi({"PALS_RANKID": "0"})
    assert not launched_by_mpi({}) and not launched_by_mpi({"SLURM_JOB_ID": "7"})
    assert not launched_by_mpi({"OMPI_COMM_WORLD_SIZE": "4", "HPC_HPO_MPI": "0"})
    assert launched_by_mpi({"HPC_HPO_MPI": "1"})


POSTING = """
import sys
from hpc_hpo.run.comm import open_comm
from hpc_hpo.run.protocol import Bye, Task

comm = open_comm()
if comm.rank == 0:
    # 4 MB, far above any eager limit: a blocking send would wait here until rank 1 receives it,
    # and rank 1 receives it only after the Bye that follows.
    comm.post(Task(1, {"blob": "x" * 4_000_000}, 1, "random"), 1)
    comm.send(Bye(0), 1)
    while comm._posted:
        comm.poll()
    print("rank 0: done", flush=True)
else:
    from mpi4py import MPI
    MPI.COMM_WORLD.recv(source=0, tag=Bye.TAG)
    received = None
    while received is None:
        received = comm.poll()
    print("rank 1: got", type(received[1]).__name__, len(received[1].params["blob"]), flush=True)
comm.close()
"""


def test_a_posted_message_never_waits_for_its_receiver(tmp_path):
    """Start-up posts each worker's Setup: a rank that hangs before it receives must not hang the master."""
    (tmp_path / "posting.py").write_text(textwrap.dedent(POSTING))
    mpirun = find_mpirun()
    out = run_command([mpirun, "-n", "2", *launcher_flags(), sys.executable, "posting.py"],
                      tmp_path, timeout=60, env=base_env())
    assert out.returncode == 0, out.output
    assert "rank 0: done" in out.stdout and "rank 1: got Task 4000000" in out.stdout


UNREAD = """
import time
from mpi4py import MPI
from hpc_hpo.run.comm import open_comm
from hpc_hpo.run.protocol import Bye, Task

comm = open_comm()
if comm.rank == 0:
    time.sleep(0.5)
    MPI.COMM_WORLD.Iprobe(source=0)  # MPI moves rank 1's Bye into this rank's queue, where nothing reads it
else:
    comm.send(Bye(1), 0)
    # 4 MB: a blocking send that returns only once rank 0 receives it, and rank 0 only closes
    comm.send(Task(1, {"blob": "x" * 4_000_000}, 1, "random"), 0)
comm.close()
print(f"rank {comm.rank}: closed", flush=True)
"""


def test_a_rank_closes_cleanly_with_messages_it_never_read(tmp_path):
    """A late Join or Hello to a master that already refused another rank: MPICH's MPI_Finalize failed with
    'being freed has 1 unmatched message(s)' and a traceback; a large unread message hung both ranks."""
    (tmp_path / "unread.py").write_text(textwrap.dedent(UNREAD))
    out = run_command([find_mpirun(), "-n", "2", *launcher_flags(), sys.executable, "unread.py"],
                      tmp_path, timeout=60, env=base_env())
    assert out.returncode == 0, out.output
    assert "rank 0: closed" in out.stdout and "rank 1: closed" in out.stdout, out.output
    assert "Traceback" not in out.output and "unmatched" not in out.output, out.output


ARRIVED_WHILE_ASLEEP = """
import time
from mpi4py import MPI
from hpc_hpo.run.comm import open_comm
from hpc_hpo.run.protocol import Bye

comm = open_comm()
MPI.COMM_WORLD.Barrier()
if comm.rank == 1:
    comm.send(Bye(1), 0)
else:
    time.sleep(0.5)  # no MPI call meanwhile: the message waits in the transport, as while the master sleeps
    print(f"rank 0: first poll {comm.poll()!r}", flush=True)
    time.sleep(0.01)
    print(f"rank 0: second poll {comm.poll()!r}", flush=True)
comm.close()
"""


def test_a_message_that_arrived_while_the_rank_slept_is_taken_by_its_first_poll(tmp_path):
    """Master and workers poll between short sleeps: a poll that only moved the message into MPI's queue, to be
    matched at the next one, made every message wait a sleep more (3.2 ms instead of 1.1 at 2-ms sleeps)."""
    (tmp_path / "asleep.py").write_text(textwrap.dedent(ARRIVED_WHILE_ASLEEP))
    out = run_command([find_mpirun(), "-n", "2", *launcher_flags(), sys.executable, "asleep.py"],
                      tmp_path, timeout=60, env=base_env())
    assert out.returncode == 0, out.output
    assert "rank 0: first poll (1, Bye(rank=1))" in out.stdout, out.output
    assert "rank 0: second poll None" in out.stdout, out.output
