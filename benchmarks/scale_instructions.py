"""The master's work per result from 8 to 16,384 workers in instructions and cache misses, not seconds.

    python benchmarks/scale_instructions.py                      # 8, 4,096 and 16,384 workers (10-25 min)
    python benchmarks/scale_instructions.py --workers 8 512

``benchmarks/scale.py`` times the master's CPU per result, which on a shared machine moves by a third from
one run to the next, and which grows with the workers (1.25-1.7x from 8 to 16,384) although the master's
work per result does not depend on them. This benchmark counts instead: the random phase of
``scale.py``'s simulated cluster (the real master loop and results file, the workers simulated in the same
process) runs under valgrind's cachegrind, which counts the instructions executed and simulates the caches
(the first-level data cache and, as its last level, a cache the size of this machine's second level). Counts
move far less than times, but not nothing: the writer's flushes and the /running time share go by the wall
clock, so the machine's load changes how often a running row is encoded (two runs, 16,384 workers: 347,592
and 372,533 instructions per result; 8 workers: 329,493 and 327,280).

Per size, two runs of the same search (``--trials`` and ``--trials`` + ``--more`` trials, the same for
every size, so the history is the same) are counted; their difference over ``--more`` is the cost of one
result in the steady state (the first tasks, the stops, the start-up and Python's imports cancel out).
The counts include the simulated workers' own work (their event queue, their messages), as the
simulation runs in the master's process. Under valgrind the master runs about 75 times slower, so
the results file is flushed every ``--flush-interval`` seconds (75 x 0.1 s): a flush then takes as many
results as in a job.

Columns: instructions, first-level data-cache misses and second-level misses (reads and writes) per
result, and each relative to the first size. Needs valgrind (Debian's package).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOTALS = {"instructions": r"I\s+refs:\s+([\d,]+)", "D1 misses": r"D1\s+misses:\s+([\d,]+)",
          "L2 misses": r"LL misses:\s+([\d,]+)"}


def child(workers: int, trials: int, flush_interval: float) -> None:
    """One run of the master against ``workers`` simulated workers (inside valgrind)."""
    sys.path.insert(0, str(HERE))
    import scale  # noqa: PLC0415 - scale.py imports hpc_hpo; only the child needs it

    from hpc_hpo.results.writer import ResultsWriter  # noqa: PLC0415

    create = ResultsWriter.create.__func__
    scale.ResultsWriter.create = classmethod(lambda cls, *a, **k: create(cls, *a, **{**k, "flush_interval":
                                                                                     flush_interval}))
    with tempfile.TemporaryDirectory() as tmp:
        stats, _ = scale.simulate(workers, "random", trials, 10.0, lambda observations, pending: 0.0, {},
                                  folder=Path(tmp))
    assert stats.trials == trials, stats.trials


def second_level_cache() -> str:
    """cachegrind's --LL for this machine's second-level cache (size,associativity,line)."""
    index = Path("/sys/devices/system/cpu/cpu0/cache/index2")
    try:
        size = (index / "size").read_text().strip()
        ways = (index / "ways_of_associativity").read_text().strip()
        line = (index / "coherency_line_size").read_text().strip()
    except OSError:
        return "1048576,8,64"
    number = int(size.rstrip("KMG")) * {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1], 1)
    return f"{number},{ways},{line}"


def count(workers: int, trials: int, flush_interval: float, cache: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["valgrind", "--tool=cachegrind", "--cache-sim=yes", f"--LL={cache}", "--cachegrind-out-file=/dev/null",
         sys.executable, __file__, "--child", str(workers), str(trials), str(flush_interval)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def totals(process: subprocess.Popen) -> dict[str, int]:
    output, _ = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"a counted run failed (exit {process.returncode}):\n{output[-3000:]}")
    found = {}
    for name, pattern in TOTALS.items():
        match = re.search(pattern, output)
        if match is None:
            raise SystemExit(f"cachegrind printed no '{name}':\n{output[-3000:]}")
        found[name] = int(match.group(1).replace(",", ""))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 4096, 16384])
    parser.add_argument("--trials", type=int, default=32768, help="trials of the shorter run (at least 2 x workers)")
    parser.add_argument("--more", type=int, default=16384, help="trials the longer run adds (at least the workers)")
    parser.add_argument("--flush-interval", type=float, default=7.5)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(int(args.child[0]), int(args.child[1]), float(args.child[2]))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind not found (apt-get install valgrind)")
    largest = max(args.workers)
    if args.trials < 2 * largest or args.more < largest:
        print(f"scale_instructions.py: --trials ({args.trials}) must be at least 2 x and --more ({args.more}) at least "
              f"1 x the largest --workers ({largest}): the steady state starts after the first tasks", file=sys.stderr)
        raise SystemExit(2)
    cache = second_level_cache()
    print(f"random phase, {args.trials:,} and {args.trials + args.more:,} trials of 10 s; the difference per result; "
          f"second level simulated as --LL={cache}")
    print(f"{'workers':>8} {'instructions':>13} {'D1 misses':>10} {'L2 misses':>10}   relative to {args.workers[0]}")
    first = None
    for workers in args.workers:
        shorter = count(workers, args.trials, args.flush_interval, cache)
        longer = count(workers, args.trials + args.more, args.flush_interval, cache)
        a, b = totals(shorter), totals(longer)
        per = {name: (b[name] - a[name]) / args.more for name in TOTALS}
        first = first or per
        relative = "  ".join(f"{per[name] / first[name]:.2f}x" for name in TOTALS)
        print(f"{workers:>8} {per['instructions']:>13,.0f} {per['D1 misses']:>10,.0f} {per['L2 misses']:>10,.0f}   "
              f"{relative}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
