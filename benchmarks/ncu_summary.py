"""Where a CUDA kernel's warps spend their time, from Nsight Compute's source page.

Reads the SASS export of ``ncu --import REPORT --page source --csv --print-source sass`` (one
block per profiled kernel) and prints, per kernel, the code regions that hold the most warp
stall samples. A region is a run of consecutive instructions executed the same number of times
(a loop body, a per-tile step), cut every ``--window`` instructions, so a kernel's producer and
consumer loops, prologue and epilogue come out as separate regions. For each region: its share of
the samples, the instructions it issues per execution, its commonest opcodes and stall reasons.

    python benchmarks/ncu_summary.py source.csv [--top 12] [--window 60] [--kernel NAME]

``scripts/device/ncu_profile.sh`` writes such a file on the lent GPU machine.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

SAMPLES = "Warp Stall Sampling (All Samples)"
EXECUTED = "Instructions Executed"


@dataclass
class Region:
    """A run of instructions executed the same number of times."""

    start: int
    executions: float
    samples: float = 0.0
    instructions: int = 0
    opcodes: Counter = field(default_factory=Counter)
    stalls: Counter = field(default_factory=Counter)


def _number(text: str) -> float:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def _opcode(source: str) -> str:
    words = source.split()
    if words and words[0].startswith("@"):  # a predicate guard
        words = words[1:]
    return words[0].split(".")[0] if words else ""


def split_kernels(text: str) -> list[tuple[str, list[dict[str, str]]]]:
    """The export's kernel blocks: (kernel name, rows as dicts keyed by the block's header)."""
    blocks: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith('"Kernel Name"'):
            name = next(csv.reader([line]))[1]
            blocks.append((name, []))
        elif blocks:
            blocks[-1][1].append(line)
    kernels = []
    seen: set[tuple[str, int]] = set()
    for name, lines in blocks:
        if (name, hash(tuple(lines))) in seen:  # the export can repeat a kernel's block
            continue
        seen.add((name, hash(tuple(lines))))
        rows = list(csv.DictReader(io.StringIO("\n".join(lines))))
        if rows and SAMPLES not in rows[0]:
            raise ValueError(f"kernel {name!r}: no {SAMPLES!r} column (export with --set full)")
        kernels.append((name, rows))
    return kernels


def regions(rows: list[dict[str, str]], window: int) -> list[Region]:
    """Consecutive executed instructions grouped by execution count, at most `window` long."""
    stall_columns = [
        c for c in (rows[0] if rows else {}) if c.startswith("stall_") and "Not Issued" not in c
    ]
    out: list[Region] = []
    for index, row in enumerate(rows):
        executions = _number(row.get(EXECUTED, ""))
        if executions == 0:
            continue
        current = out[-1] if out else None
        if current is None or current.executions != executions or index - current.start >= window:
            current = Region(start=index, executions=executions)
            out.append(current)
        current.samples += _number(row[SAMPLES])
        current.instructions += 1
        current.opcodes[_opcode(row.get("Source", ""))] += 1
        for column in stall_columns:
            current.stalls[column.removeprefix("stall_")] += _number(row[column])
    return out


def summary(name: str, rows: list[dict[str, str]], top: int, window: int) -> str:
    found = regions(rows, window)
    total = sum(r.samples for r in found) or 1.0
    executed = sum(r.executions * r.instructions for r in found)
    lines = [
        f"== {name}",
        f"   {len(rows)} instructions, {executed:,.0f} executed, {total:,.0f} samples",
    ]
    lines.append("   share  first  instrs  executions  opcodes / stalls")
    for r in sorted(found, key=lambda r: -r.samples)[:top]:
        ops = " ".join(f"{op}:{n}" for op, n in r.opcodes.most_common(4))
        stalls = " ".join(
            f"{s}:{n / r.samples:.0%}" for s, n in r.stalls.most_common(3) if r.samples
        )
        where = f"{r.start:5d}  {r.instructions:6d}  {r.executions:10,.0f}"
        lines.append(f"   {r.samples / total:5.1%}  {where}  {ops} | {stalls}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "source_csv", type=Path, help="ncu --page source --csv --print-source sass output"
    )
    parser.add_argument(
        "--top", type=int, default=12, help="regions to print per kernel (default 12)"
    )
    parser.add_argument(
        "--window", type=int, default=60, help="longest region, in instructions (default 60)"
    )
    parser.add_argument("--kernel", default="", help="only kernels whose name contains this")
    args = parser.parse_args(argv)
    try:
        kernels = split_kernels(args.source_csv.read_text())
    except (OSError, ValueError) as err:
        print(f"ncu_summary: {args.source_csv}: {err}", file=sys.stderr)
        return 2
    chosen = [(n, rows) for n, rows in kernels if args.kernel in n]
    if not chosen:
        print(
            f"ncu_summary: {args.source_csv}: no kernel block matching {args.kernel!r}",
            file=sys.stderr,
        )
        return 2
    print("\n\n".join(summary(n, rows, args.top, args.window) for n, rows in chosen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
