"""The machine's fp32 multiply-add ceiling at 1 and N busy cores, the bound of thread scaling.

Compiles benchmarks/fma_ceiling.c with the system C compiler (-O2 -march=native: AVX-512 where
the CPU has it, else AVX2) and runs it for each thread count, interleaved, several times. Each
thread runs independent FMA chains on registers only, so the per-thread rate follows the core
clock under that load: when 16 busy cores run slower per core than one, no compute-bound kernel
can scale by 16 — the script prints the bound (aggregate rate at N threads / rate at 1).

Usage: python benchmarks/fma_ceiling.py --threads 1,2,16 [--reps 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("fma_ceiling.c")


def build(workdir: str) -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("fma_ceiling.py: no C compiler (set CC)")
    exe = os.path.join(workdir, "fma_ceiling")
    cmd = [cc, "-O2", "-march=native", "-pthread", str(SOURCE), "-o", exe]
    subprocess.run(cmd, check=True)
    return exe


def run(exe: str, threads: int, iters: int) -> tuple[float, float]:
    """(GFLOP/s per thread, aggregate GFLOP/s)"""
    out = subprocess.run(
        [exe, str(threads), str(iters)], check=True, capture_output=True, text=True
    )
    _, per_thread, aggregate, _ = out.stdout.split()
    return float(per_thread), float(aggregate)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", default=f"1,{os.cpu_count()}")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--iters", type=int, default=100_000_000, help="FMA rounds per thread")
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args(argv)
    counts = [int(t) for t in args.threads.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        exe = build(tmp)
        samples: dict[int, list[tuple[float, float]]] = {t: [] for t in counts}
        for _ in range(args.reps):
            order = counts[:]
            random.shuffle(order)
            for t in order:
                samples[t].append(run(exe, t, args.iters))
    one = statistics.median(a for _, a in samples[min(counts)]) / min(counts)
    rows = []
    print(f"{'threads':>7s} {'GFLOP/s per thread':>19s} {'aggregate':>10s} {'vs 1 thread':>12s}")
    for t in counts:
        per = [p for p, _ in samples[t]]
        agg = [a for _, a in samples[t]]
        row = {
            "threads": t,
            "per_thread_median": statistics.median(per),
            "per_thread_range": [min(per), max(per)],
            "aggregate_median": statistics.median(agg),
            "scaling_bound": statistics.median(agg) / one,
        }
        rows.append(row)
        print(
            f"{t:7d} {row['per_thread_median']:10.1f} ({min(per):.0f}-{max(per):.0f})"
            f" {row['aggregate_median']:10.1f} {row['scaling_bound']:11.2f}x"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpus": os.cpu_count(), "results": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
