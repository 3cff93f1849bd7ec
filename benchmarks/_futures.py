"""A peer for reference: mpi4py.futures (MPIPoolExecutor), null tasks per second.

Run as ``mpirun -n N python -m mpi4py.futures benchmarks/_futures.py TRIALS``.
"""

import json
import sys
import time

from mpi4py.futures import MPIPoolExecutor


def null(_):
    return 0.0


if __name__ == "__main__":
    total = int(sys.argv[1])
    with MPIPoolExecutor() as pool:
        list(pool.map(null, range(100)))  # start the workers before timing
        started = time.perf_counter()
        for future in [pool.submit(null, i) for i in range(total)]:
            future.result()
        elapsed = time.perf_counter() - started
    print(json.dumps({"trials": total, "seconds": elapsed, "rate": total / elapsed}))
