"""Interleaved A/B of two row-work microbenchmark binaries (see run.sh; ROW_WORK_BIN names the
output). Runs A and B alternately and prints each case's medians and the A/B ratio (median, IQR).

Usage: python benchmarks/row_work/ab.py A_BIN B_BIN [--rounds 9] [--args "15 32 128"]
"""

from __future__ import annotations

import argparse
import collections
import re
import statistics
import subprocess

LINE = re.compile(r"(.+?)\s+([0-9.]+) ns/score")


def run(binary: str, args: list[str]) -> dict[str, float]:
    out = subprocess.run([binary, *args], capture_output=True, text=True, check=True).stdout
    return {m.group(1): float(m.group(2)) for m in map(LINE.match, out.splitlines()) if m}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--args", default="15 32 128")
    a = ap.parse_args()
    args = a.args.split()
    times: dict[str, dict[str, list[float]]] = collections.defaultdict(lambda: {"A": [], "B": []})
    for k in range(a.rounds):
        order = [("A", a.a), ("B", a.b)] if k % 2 == 0 else [("B", a.b), ("A", a.a)]
        for tag, binary in order:
            for case, ns in run(binary, args).items():
                times[case][tag].append(ns)
    for case, t in times.items():
        ratio = [x / y for x, y in zip(t["A"], t["B"], strict=True)]
        q = statistics.quantiles(ratio, n=4)
        ma, mb = statistics.median(t["A"]), statistics.median(t["B"])
        print(
            f"{case:18s} A {ma:.3f}  B {mb:.3f} ns/score   A/B {statistics.median(ratio):.3f}"
            f" (IQR {q[0]:.3f}-{q[2]:.3f})"
        )


if __name__ == "__main__":
    main()
