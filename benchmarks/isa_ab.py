"""A/B of two instruction-set paths of PasaAttention in one process (e.g. avx512 vs avx512bf16).

The library picks its path once per load, so each path gets its own copy of the library file
(loaded with PASA_ONNX_ISA set to that path). The runs alternate in a shuffled order; the
speed-up is per repetition, CPU time of this thread (one intra-op thread), median and IQR.
Accuracy: relative RMSE against float64 and the largest difference to the numpy emulation.

Usage: python benchmarks/isa_ab.py --paths avx512,avx512bf16 --dtype bf16 --seq 1024 [--causal]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import time

import numpy as np
from onnx import TensorProto, helper

import pasa_onnx
from pasa_onnx.numerics import BFLOAT16, attention_emulated, attention_golden, error_metrics


def model(dtype, shape_q, shape_kv, causal):
    io = [
        helper.make_tensor_value_info("Q", dtype, shape_q),
        helper.make_tensor_value_info("K", dtype, shape_kv),
        helper.make_tensor_value_info("V", dtype, shape_kv),
    ]
    node = helper.make_node(
        "PasaAttention", ["Q", "K", "V"], ["Y"], domain="ai.pasa", is_causal=int(causal)
    )
    graph = helper.make_graph([node], "ab", io, [helper.make_tensor_value_info("Y", dtype, None)])
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 23), helper.make_opsetid("ai.pasa", 1)]
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--paths", default="avx512,avx512bf16")
    ap.add_argument("--dtype", choices=["fp16", "bf16"], default="bf16")
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args(argv)
    import onnxruntime as ort

    np_t, onnx_t = (
        (BFLOAT16, TensorProto.BFLOAT16)
        if args.dtype == "bf16"
        else (
            np.float16,
            TensorProto.FLOAT16,
        )
    )
    rng = np.random.default_rng(0)
    shape = (1, args.heads, args.seq, args.dim)
    q, k, v = (rng.standard_normal(shape).astype(np_t) for _ in range(3))
    feeds = {"Q": q, "K": k, "V": v}
    proto = model(onnx_t, list(shape), list(shape), args.causal).SerializeToString()
    tmp = tempfile.mkdtemp()
    sessions = {}
    for path in args.paths.split(","):
        lib = os.path.join(tmp, f"libpasa_{path}.so")
        shutil.copy(pasa_onnx.library_path(), lib)
        os.environ["PASA_ONNX_ISA"] = path
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.register_custom_ops_library(lib)
        sessions[path] = ort.InferenceSession(proto, opts, providers=["CPUExecutionProvider"])
    outputs = {p: pasa_onnx.run(s, feeds)[0] for p, s in sessions.items()}
    if args.seq <= 2048:
        gold = attention_golden(q, k, v, is_causal=args.causal)
        emu = attention_emulated(q, k, v, is_causal=args.causal).astype(np.float64)
        for p, y in outputs.items():
            print(
                f"{p:12s} rel RMSE vs float64 {error_metrics(y, gold, v).rel_rmse:.6e}, "
                f"max |kernel - emulation| {np.abs(y.astype(np.float64) - emu).max():.3e}"
            )
    times = {p: [] for p in sessions}
    for _ in range(args.reps):
        order = list(sessions)
        random.shuffle(order)
        for p in order:
            t0 = time.thread_time()
            pasa_onnx.run(sessions[p], feeds)
            times[p].append(time.thread_time() - t0)
    first = next(iter(sessions))
    for p, ts in times.items():
        ratio = [a / b for a, b in zip(times[first], ts, strict=True)]
        q1, _, q3 = statistics.quantiles(ratio, n=4)
        print(
            f"{p:12s} cpu median {statistics.median(ts) * 1e3:8.2f} ms, speed-up vs {first} "
            f"{statistics.median(ratio):.3f} (IQR {q1:.3f}-{q3:.3f})"
        )
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
