"""The baseline: a minimal mpi4py master/worker loop (blocking send/recv), round trips per second.

Run under mpirun; rank 0 prints one JSON line. Each worker keeps one message in flight, as
hpc_hpo does, and the master answers whichever worker speaks next. A few untimed round trips
first set up the connections, as hpc_hpo's start-up messages do before its clock starts.
"""

import json
import sys
import time

from mpi4py import MPI

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
total = int(sys.argv[1])

WARM_UP = 20

if rank == 0:
    status = MPI.Status()
    for worker in range(1, size):
        for _ in range(WARM_UP):
            comm.send(("warm", {}), dest=worker)
            comm.recv(source=worker)
    started = time.perf_counter()
    for worker in range(1, size):
        comm.send((0, {"x": 0.5, "y": 0.5}), dest=worker)
    sent, done = size - 1, 0
    while done < total:
        comm.recv(source=MPI.ANY_SOURCE, status=status)
        done += 1
        if sent < total:
            comm.send((sent, {"x": 0.5, "y": 0.5}), dest=status.Get_source())
            sent += 1
        else:
            comm.send(None, dest=status.Get_source())
    elapsed = time.perf_counter() - started
    print(json.dumps({"trials": total, "seconds": elapsed, "rate": total / elapsed}))
else:
    for _ in range(WARM_UP):
        comm.send(comm.recv(source=0), dest=0)
    while True:
        task = comm.recv(source=0)
        if task is None:
            break
        comm.send((task[0], 0.0), dest=0)
