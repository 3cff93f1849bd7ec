"""Summarise a GPU check (run.sh): binding per trial, GPU memory per trial process, GPU vs CPU times.

    python benchmarks/gpu_check/summary.py DIR     # DIR: where run.sh wrote its CSVs and logs
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def duration(row: dict[str, str]) -> float:
    return float(row["t_end"]) - float(row["t_start"])


def binding_table(out: Path) -> None:
    print("run      trials  ranks seen (gpus column)  CUDA_VISIBLE_DEVICES in trial  memory fraction  threads")
    for name in ("share", "mem", "timing", "timing_cpu", "bayes"):
        if not (out / f"{name}.csv").exists():
            continue
        table = rows(out / f"{name}.csv")
        seen = sorted({f"r{r['rank']}:{r['gpus']}" for r in table})
        visible = sorted({r["metric_cuda_visible"] for r in table})
        fractions = sorted({r["metric_fraction"] for r in table})
        threads = sorted({r["metric_threads"] for r in table})
        print(f"{name:<8} {len(table):>6}  {' '.join(seen):<24}  {','.join(visible):<29}  "
              f"{','.join(fractions):<15}  {','.join(threads)}")


def memory_table(out: Path) -> None:
    """GPU memory (MiB, nvidia-smi) of each trial process, by run: peak and last sample."""
    phase, series = "", defaultdict(list)
    for line in (out / "gpumem.csv").read_text().splitlines():
        fields = [f.strip() for f in line.split(",")]
        if fields[0] == "MARK":
            phase = fields[2]
        elif len(fields) == 3 and fields[2].isdigit():
            series[(phase, fields[1])].append(int(fields[2]))
    print("\nrun         trial process  samples  GPU MiB max  last")
    for (phase, pid), values in series.items():
        print(f"{phase:<11} {pid:>13}  {len(values):>7}  {max(values):>11}  {values[-1]:>4}")


def timing_table(out: Path) -> None:
    gpu, cpu = rows(out / "timing.csv"), rows(out / "timing_cpu.csv")
    print("\ntrial  width  batch  GPU s  CPU s  CPU/GPU")
    for g, c in zip(gpu, cpu, strict=True):
        assert g["param_width"] == c["param_width"], "the two timing runs must see the same points"
        note = "  (first trial of the process: imports, CUDA start)" if g["trial_id"] == "0" else ""
        print(f"{g['trial_id']:>5}  {g['param_width']:>5}  {g['param_batch_size']:>5}  {duration(g):5.2f}  "
              f"{duration(c):5.2f}  {duration(c) / duration(g):6.1f}x{note}")


def main(argv: list[str]) -> None:
    out = Path(argv[1] if len(argv) > 1 else ".")
    binding_table(out)
    memory_table(out)
    timing_table(out)


if __name__ == "__main__":
    main(sys.argv)
