"""A/B of two builds of the custom-op library: bit identity of outputs, and speed, in one process.

``--check`` runs both libraries on the same inputs and compares every output bit for bit: ONNX's
75 Attention conformance cases (as shipped, and cast to fp32, fp16 and bf16), the PASA paper's
random grid (fp16, S = 1407, D = 128, 4/2 heads, ``half`` and ``paper``) and decode, GQA, past,
mask and 3-D cases. It runs once per CPU path (``--isa``; each path in a subprocess, the library
picks its path when it loads).

``--speed`` alternates the two builds in a shuffled order and reports the per-repetition speed-up
(CPU time of one intra-op thread), median and interquartile range.

Usage:
  python benchmarks/ab_builds.py --a OLD.so --b NEW.so --check [--isa avx512,avx2]
  python benchmarks/ab_builds.py --a OLD.so --b NEW.so --speed [--seq 128,1024] [--reps 15]
      [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator

import numpy as np
import onnx
from onnx import TensorProto, helper

import pasa_onnx
from pasa_onnx.numerics import BFLOAT16, paper_random_inputs

DTYPES = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16), "bfloat16": BFLOAT16}


def _session(lib: str, model: onnx.ModelProto, threads: int = 1):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.register_custom_ops_library(lib)
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _run(sess, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return pasa_onnx.run(sess, feeds)  # bfloat16-capable


def _single_node(
    dtype: int, q: tuple, kv: tuple, extra: dict | None = None, **attrs
) -> onnx.ModelProto:
    extra = extra or {}
    io = [helper.make_tensor_value_info("Q", dtype, q)]
    io += [helper.make_tensor_value_info(n, dtype, kv) for n in ("K", "V")]
    io += [helper.make_tensor_value_info(n, t, s) for n, (t, s) in extra.items()]
    inputs = ["Q", "K", "V", "", "", "", ""]
    for n in extra:
        inputs[{"attn_mask": 3, "past_key": 4, "past_value": 5}[n]] = n
    while inputs[-1] == "":
        inputs.pop()
    outs = ["Y", "present_key", "present_value"] if "past_key" in extra else ["Y"]
    node = helper.make_node("PasaAttention", inputs, outs, domain="ai.pasa", **attrs)
    graph = helper.make_graph(
        [node], "ab", io, [helper.make_tensor_value_info(o, dtype, None) for o in outs]
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 23), helper.make_opsetid("ai.pasa", 1)]
    )


def conformance_cases() -> Iterator[tuple[str, onnx.ModelProto, dict]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from onnx.backend.test.case.node import collect_testcases

        cases = collect_testcases("Attention")
    floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16}
    for case in cases:
        graph = case.model.graph
        if len(graph.node) != 1 or graph.node[0].op_type != "Attention":
            continue
        opset = max(o.version for o in case.model.opset_import if o.domain in ("", "ai.onnx"))
        outputs = list(graph.node[0].output)
        if not 23 <= opset <= 25 or (len(outputs) > 3 and outputs[3]):
            continue
        inputs, _ = case.data_sets[0]
        feeds = dict(zip([i.name for i in graph.input], inputs, strict=True))
        for type_name in ("shipped", *DTYPES):
            model = onnx.ModelProto()
            model.CopyFrom(case.model)
            node = model.graph.node[0]
            node.op_type, node.domain = "PasaAttention", "ai.pasa"
            while len(node.output) > 3:
                node.output.pop()
            model.opset_import.append(helper.make_opsetid("ai.pasa", 1))
            cast = dict(feeds)
            if type_name != "shipped":
                dtype = DTYPES[type_name]
                elem = helper.np_dtype_to_tensor_dtype(dtype)
                for vi in list(model.graph.input) + list(model.graph.output):
                    if vi.type.tensor_type.elem_type in floats:
                        vi.type.tensor_type.elem_type = elem
                cast = {
                    k: v.astype(dtype) if v.dtype.kind == "f" or v.dtype == BFLOAT16 else v
                    for k, v in feeds.items()
                }
            yield f"{case.name}[{type_name}]", model, cast


def paper_cases() -> Iterator[tuple[str, onnx.ModelProto, dict]]:
    for dist in ("uniform", "normal"):
        for mean in (0, 10, 20, 30):
            for am in (0.5, 5, 10, 20):
                q, k, v = paper_random_inputs(
                    dist, mean, am, q_heads=4, kv_heads=2, seq=1407, dim=128
                )
                for precision in ("half", "paper"):
                    model = _single_node(TensorProto.FLOAT16, q.shape, k.shape, precision=precision)
                    yield f"paper[{dist},{mean},{am},{precision}]", model, {"Q": q, "K": k, "V": v}


def extra_cases() -> Iterator[tuple[str, onnx.ModelProto, dict]]:
    """Decode (direct and group tiles), GQA, past/present, masks, causal windows, 3-D layout."""
    rng = np.random.default_rng(7)
    for type_name, elem in (
        ("float16", TensorProto.FLOAT16),
        ("bfloat16", TensorProto.BFLOAT16),
        ("float32", TensorProto.FLOAT),
    ):
        dt = DTYPES[type_name]

        def rnd(*shape, bias=0.0, dt=dt):
            return (rng.standard_normal(shape) * 2 + bias).astype(np.float32).astype(dt)

        for hq, hkv, sq, skv, d in (
            (32, 8, 1, 4096, 128),
            (12, 12, 3, 777, 64),
            (8, 2, 200, 300, 80),
        ):
            q, k, v = rnd(1, hq, sq, d), rnd(1, hkv, skv, d, bias=5), rnd(1, hkv, skv, d)
            for causal in (0, 1):
                model = _single_node(elem, q.shape, k.shape, is_causal=causal)
                yield (
                    f"gqa[{type_name},{hq}/{hkv},{sq}x{skv},c{causal}]",
                    model,
                    {"Q": q, "K": k, "V": v},
                )
        q, k, v = rnd(2, 4, 5, 64), rnd(2, 2, 5, 64), rnd(2, 2, 5, 64)
        pk, pv = rnd(2, 2, 300, 64), rnd(2, 2, 300, 64)
        past = {"past_key": (elem, pk.shape), "past_value": (elem, pv.shape)}
        model = _single_node(elem, q.shape, k.shape, extra=past, is_causal=1)
        yield (
            f"past[{type_name}]",
            model,
            {"Q": q, "K": k, "V": v, "past_key": pk, "past_value": pv},
        )
        mask = rng.random((2, 1, 40, 250)) > 0.3
        q, k, v = rnd(2, 4, 40, 64), rnd(2, 4, 250, 64), rnd(2, 4, 250, 64)
        model = _single_node(
            elem, q.shape, k.shape, extra={"attn_mask": (TensorProto.BOOL, mask.shape)}
        )
        yield f"bool_mask[{type_name}]", model, {"Q": q, "K": k, "V": v, "attn_mask": mask}
        add = np.where(rng.random((40, 250)) > 0.2, rng.standard_normal((40, 250)), -np.inf)
        add = add.astype(np.float32).astype(dt)
        model = _single_node(elem, q.shape, k.shape, extra={"attn_mask": (elem, add.shape)})
        yield f"add_mask[{type_name}]", model, {"Q": q, "K": k, "V": v, "attn_mask": add}
        model = _single_node(elem, q.shape, k.shape, is_causal=1, left_window_size=50)
        yield f"window[{type_name}]", model, {"Q": q, "K": k, "V": v}
        q3, k3, v3 = rnd(1, 90, 6 * 64), rnd(1, 130, 2 * 64), rnd(1, 130, 2 * 64)
        model = _single_node(elem, q3.shape, k3.shape, q_num_heads=6, kv_num_heads=2)
        yield f"3d[{type_name}]", model, {"Q": q3, "K": k3, "V": v3}


def check(lib_a: str, lib_b: str) -> dict:
    compared = identical = 0
    mismatches: list[str] = []
    for name, model, feeds in [*conformance_cases(), *paper_cases(), *extra_cases()]:
        out_a = _run(_session(lib_a, model), feeds)
        out_b = _run(_session(lib_b, model), feeds)
        compared += 1
        same = len(out_a) == len(out_b) and all(
            a.shape == b.shape and a.tobytes() == b.tobytes()
            for a, b in zip(out_a, out_b, strict=True)
        )
        identical += same
        if not same:
            mismatches.append(name)
    return {"compared": compared, "identical": identical, "mismatches": mismatches[:20]}


def speed(
    lib_a: str,
    lib_b: str,
    seqs: list[int],
    reps: int,
    dtype: str = "float16",
    shapes: tuple[tuple[int, int], ...] = ((12, 64),),
    causals: tuple[int, ...] = (0, 1),
) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    elem = {"float16": TensorProto.FLOAT16, "bfloat16": TensorProto.BFLOAT16}[dtype]
    for (heads, dim), seq, causal in itertools.product(shapes, seqs, causals):
        q, k, v = (
            rng.standard_normal((1, heads, seq, dim)).astype(DTYPES[dtype]) for _ in range(3)
        )
        model = _single_node(elem, q.shape, k.shape, is_causal=causal)
        sessions = {"a": _session(lib_a, model), "b": _session(lib_b, model)}
        feeds = {"Q": q, "K": k, "V": v}
        for s in sessions.values():
            _run(s, feeds)
        times: dict[str, list[float]] = {"a": [], "b": []}
        for _ in range(reps):
            order = ["a", "b"]
            random.shuffle(order)
            for key in order:
                t0 = time.thread_time()
                _run(sessions[key], feeds)
                times[key].append(time.thread_time() - t0)
        ratios = sorted(a / b for a, b in zip(times["a"], times["b"], strict=True))
        q1, _, q3 = statistics.quantiles(ratios, n=4)
        rows.append(
            {
                "dtype": dtype,
                "shape": f"{heads}x{dim}",
                "seq": seq,
                "causal": causal,
                "a_ms": 1e3 * statistics.median(times["a"]),
                "b_ms": 1e3 * statistics.median(times["b"]),
                "speedup_b_over_a": statistics.median(ratios),
                "iqr": [q1, q3],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--a", required=True, help="library file of build A (e.g. the previous main)")
    ap.add_argument("--b", required=True, help="library file of build B")
    ap.add_argument("--check", action="store_true", help="bit identity over the case set")
    ap.add_argument("--isa", default="avx512bf16,avx512,avx2,portable", help="paths for --check")
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--seq", default="128,1024")
    ap.add_argument("--dtype", default="float16", help="--speed inputs: float16 or bfloat16")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--shapes", default="12x64", help="--speed: HEADSxHEAD_DIM, comma-separated")
    ap.add_argument("--causal", default="0,1", help="--speed: causal values, comma-separated")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        # Distinct file names: the dynamic loader would hand the same handle back otherwise.
        lib_a, lib_b = os.path.join(tmp, "a.so"), os.path.join(tmp, "b.so")
        shutil.copy(args.a, lib_a)
        shutil.copy(args.b, lib_b)
        if args.worker:
            print(json.dumps(check(lib_a, lib_b)))
            return 0
        if args.check:
            results = {}
            for isa in args.isa.split(","):
                env = dict(os.environ, PASA_ONNX_ISA=isa)
                cmd = [sys.executable, __file__, "--a", args.a, "--b", args.b, "--worker"]
                out = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if out.returncode != 0:
                    results[isa] = {"error": out.stderr.strip().splitlines()[-1:]}
                else:
                    results[isa] = json.loads(out.stdout.strip().splitlines()[-1])
                print(isa, json.dumps(results[isa]), flush=True)
            ok = all(r.get("compared") == r.get("identical") for r in results.values())
            return 0 if ok else 1
        if args.speed:
            shapes = tuple(
                (int(h), int(d)) for h, d in (x.split("x") for x in args.shapes.split(","))
            )
            causals = tuple(int(c) for c in args.causal.split(","))
            seqs = [int(s) for s in args.seq.split(",")]
            speed(lib_a, lib_b, seqs, args.reps, args.dtype, shapes, causals)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
