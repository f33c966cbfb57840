"""The PASA paper's random accuracy benchmark through the PasaAttention kernel.

fp16 Q, K, V (uniform or normal + Bernoulli spikes, mean in {0,10,20,30}, amplitude in
{0.5,5,10,20}), S = 1407, D = 128, GQA 14 query / 2 kv heads. For each case: relative RMSE
(RMSE / RMS(V)) against float64 for the kernel in `half` and `paper` modes, the numpy emulation of
each, and whether a plain fp16 flash-attention pipeline overflows.

    python benchmarks/paper_random.py [--heads 14 --kv-heads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

import pasa_onnx
from pasa_onnx.numerics import (
    attention_emulated,
    attention_golden,
    attention_plain_half,
    error_metrics,
    paper_random_inputs,
)


def _kernel(q, k, v, precision: str) -> np.ndarray:
    from onnx import TensorProto, helper

    node = helper.make_node(
        "PasaAttention", ["Q", "K", "V"], ["Y"], domain="ai.pasa", precision=precision
    )
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT16, None) for n in "QKVY"]
    graph = helper.make_graph([node], "paper", io[:3], io[3:])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 23), helper.make_opsetid("ai.pasa", 1)]
    )
    model.ir_version = 10  # onnxruntime 1.30 reads IR <= 13; onnx 1.23 writes 14 by default
    return pasa_onnx.inference_session(model).run(None, {"Q": q, "K": k, "V": v})[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heads", type=int, default=14)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--seq", type=int, default=1407)
    parser.add_argument("--json", help="write the rows as JSON here")
    args = parser.parse_args(argv)

    rows = []
    header = (
        f"{'dist':8} {'mean':>4} {'Am':>4} | {'half':>9} {'paper':>9} | {'emu half':>9} "
        f"{'emu paper':>9} | {'non-finite':>10} {'plain fp16':>10}"
    )
    print(header)
    print("-" * len(header))
    start = time.time()
    for dist in ("uniform", "normal"):
        for mean in (0, 10, 20, 30):
            for am in (0.5, 5, 10, 20):
                q, k, v = paper_random_inputs(
                    dist, mean, am, q_heads=args.heads, kv_heads=args.kv_heads, seq=args.seq
                )
                gold = attention_golden(q, k, v)
                row = {"dist": dist, "mean": mean, "amplitude": am}
                nonfinite = 0
                for mode in ("half", "paper"):
                    m = error_metrics(_kernel(q, k, v, mode), gold, v)
                    e = error_metrics(attention_emulated(q, k, v, precision=mode), gold, v)
                    row[f"kernel_{mode}_rel_rmse"] = m.rel_rmse
                    row[f"emulated_{mode}_rel_rmse"] = e.rel_rmse
                    nonfinite += m.nonfinite
                row["kernel_nonfinite"] = nonfinite
                plain = error_metrics(attention_plain_half(q, k, v), gold, v)
                row["plain_fp16_nonfinite"] = plain.nonfinite
                rows.append(row)
                print(
                    f"{dist:8} {mean:>4} {am:>4} | {row['kernel_half_rel_rmse']:9.2e} "
                    f"{row['kernel_paper_rel_rmse']:9.2e} | {row['emulated_half_rel_rmse']:9.2e} "
                    f"{row['emulated_paper_rel_rmse']:9.2e} | {nonfinite:>10} "
                    f"{'overflow' if plain.nonfinite else 'finite':>10}",
                    flush=True,
                )
    worse = [r for r in rows if r["kernel_half_rel_rmse"] > r["kernel_paper_rel_rmse"]]
    print(
        f"\n{len(rows)} cases, {time.time() - start:.0f} s; kernel non-finite outputs: "
        f"{sum(r['kernel_nonfinite'] for r in rows)}; half less accurate than paper: {len(worse)}; "
        f"plain fp16 overflows: {sum(r['plain_fp16_nonfinite'] > 0 for r in rows)} cases"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"heads": args.heads, "kv_heads": args.kv_heads, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
