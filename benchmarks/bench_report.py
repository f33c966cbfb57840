"""Render bench_attention.py JSON files as the Markdown tables of docs/benchmarks.md.

Usage: python benchmarks/bench_report.py a.json [b.json ...] > tables.md
"""

from __future__ import annotations

import json
import sys

BASELINES = ("mha_fp32", "unfused_fp16", "unfused_fp32", "attn23_fp16", "sdpa_fp32", "sdpa_bf16")


def _fmt(r: dict | None) -> str:
    if r is None:
        return "–"
    return f"{r['median']:.2f} ({r['q1']:.2f}–{r['q3']:.2f})"


def render(paths: list[str]) -> str:
    out = []
    ratios, results, memory, machines = [], [], [], []
    for p in paths:
        with open(p) as f:
            d = json.load(f)
        ratios += d.get("ratios", [])
        results += d.get("results", [])
        memory += d.get("memory", [])
        machines.append((p, d.get("machine", {}), d.get("command", "")))
    cases = list(dict.fromkeys(r["case"] for r in ratios))
    if cases:
        out.append("### One thread: PasaAttention speed-up, CPU time (median, IQR)\n")
        out.append("| case | pasa GFLOP/s (cpu) | " + " | ".join(BASELINES) + " |")
        out.append("|---" * (len(BASELINES) + 2) + "|")
        for c in cases:
            gf = next(
                (
                    r["extra"].get("cpu_gflops")
                    for r in results
                    if r["case"] == c and r["variant"] == "pasa" and r["threads"] == 1
                ),
                None,
            )
            row = [c, f"{gf:.1f}" if gf else "–"]
            for b in BASELINES:
                row.append(
                    _fmt(
                        next(
                            (
                                r
                                for r in ratios
                                if r["case"] == c and r["ratio"] == f"pasa vs {b} (cpu)"
                            ),
                            None,
                        )
                    )
                )
            out.append("| " + " | ".join(row) + " |")
        two = [r for r in ratios if r["threads"] > 1]
        if two:
            out.append("\n### Two threads: wall-clock speed-up (median, IQR)\n")
            out.append("| case | 2 vs 1 thread (pasa) | vs mha_fp32 | vs unfused_fp16 |")
            out.append("|---|---|---|---|")
            for c in cases:

                def pick(name, c=c):
                    return next((r for r in two if r["case"] == c and r["ratio"] == name), None)

                out.append(
                    f"| {c} | {_fmt(pick('pasa 2 threads vs 1'))} | "
                    f"{_fmt(pick('pasa vs mha_fp32'))} | {_fmt(pick('pasa vs unfused_fp16'))} |"
                )
    if memory:
        out.append("\n### Peak memory growth of one run (MB, fresh process, one thread)\n")
        variants = list(dict.fromkeys(m["variant"] for m in memory))
        out.append("| case | " + " | ".join(variants) + " |")
        out.append("|---" * (len(variants) + 1) + "|")
        for c in dict.fromkeys(m["case"] for m in memory):
            row = [c]
            for v in variants:
                m = next((m for m in memory if m["case"] == c and m["variant"] == v), None)
                row.append(f"{m['growth_mb']:.0f}" if m and "growth_mb" in m else "–")
            out.append("| " + " | ".join(row) + " |")
    out.append("\n### Runs\n")
    for _p, m, cmd in machines:
        out.append(
            f"- `{cmd}` — {m.get('cpu', '?')}, {m.get('cpus', '?')} CPUs, "
            f"onnxruntime {m.get('onnxruntime')}, torch {m.get('torch')}, "
            f"pasa path {m.get('pasa_isa', {}).get('active', '?')}, load average "
            f"{m.get('loadavg_start', ['?'])[0]:.1f} → {m.get('loadavg_end', ['?'])[0]:.1f}"
        )
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render(sys.argv[1:]))
