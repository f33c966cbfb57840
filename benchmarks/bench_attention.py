"""Attention throughput and peak memory: PasaAttention against onnxruntime's and torch's kernels.

Every case builds all variants and thread counts first, then times them interleaved (one run of
each, in a shuffled order, repeated), so load on a shared machine hits all of them alike. Ratios
are per repetition (baseline time / PasaAttention time, same repetition) and reported as the
median with the IQR and min-max spread; times as median with min-max. One-thread runs also record
the CPU time of the running thread (``time.thread_time``) and report ratios of it, marked
"(cpu)": on a shared, oversubscribed machine wall-clock time mostly measures the scheduler's share,
CPU time the work itself. Multi-thread ratios and scaling are wall-clock only.

Variants (fp16 in/out unless named fp32/bf16):
  pasa          ai.pasa::PasaAttention, default precision (``half``)
  pasa_bf16     the same with bfloat16 inputs/outputs (P·V on vdpbf16ps where the CPU has it)
  mha_fp32      com.microsoft.MultiHeadAttention, fp32 (3-D inputs, ``unidirectional`` if causal)
  unfused_fp32  MatMul(Q, Transpose(K)) -> Mul(scale) [-> Add(causal mask)] -> Softmax -> MatMul(V)
  unfused_fp16  the same graph in fp16; onnxruntime's CPU provider runs it with inserted Casts
  attn23_fp16   ONNX Attention (opset 23), fp16
  sdpa_fp32     torch.nn.functional.scaled_dot_product_attention, fp32 (if torch is installed)
  sdpa_bf16     the same in bfloat16 (oneDNN; AMX where the CPU has it)
  sdpa_fp16     the same in float16

Ratios: pasa against every other variant, and pasa_bf16 against sdpa_bf16 (bf16 in/out both).

FLOPs = 4·B·H·Sq·Skv·D for every case, causal included (a nominal count: causal kernels that
skip the upper triangle show up to twice this rate).

Usage:
  python benchmarks/bench_attention.py                      # the default grid
  python benchmarks/bench_attention.py --quick              # a short grid (CI smoke / 16 cores)
  python benchmarks/bench_attention.py --threads 1,2,16 --json out.json
  python benchmarks/bench_attention.py --shapes 12x64 --seq 1024,4096 --causal 0,1
  python benchmarks/bench_attention.py --memory             # peak memory, one process per case
  python benchmarks/bench_attention.py --shapes 32:8x128 --seq '' --decode 4096   # GQA decode

GQA shapes (H:KV): pasa, pasa_bf16 and attn23_fp16 take the KV key/value heads natively; the
other variants get K and V repeated per query head (outside the timing).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper

VARIANTS = (
    "pasa",
    "pasa_bf16",
    "mha_fp32",
    "unfused_fp32",
    "unfused_fp16",
    "attn23_fp16",
    "sdpa_fp32",
    "sdpa_bf16",
    "sdpa_fp16",
)
# Variants that materialise the S x S score matrix (per batch and head) in fp32; they are skipped
# where that would exceed --max-matrix-gb.
MATRIX_VARIANTS = {"mha_fp32": 1, "unfused_fp32": 2, "unfused_fp16": 3, "attn23_fp16": 2}
FP = {"fp16": (np.float16, TensorProto.FLOAT16), "fp32": (np.float32, TensorProto.FLOAT)}


@dataclass(frozen=True)
class Case:
    heads: int
    head_dim: int
    q_len: int
    kv_len: int
    causal: bool
    batch: int = 1
    kv_heads: int = 0  # 0: as many as query heads; fewer: GQA (pasa and attn23 natively)

    @property
    def kv(self) -> int:
        return self.kv_heads or self.heads

    @property
    def name(self) -> str:
        kind = "decode" if self.q_len == 1 else ("causal" if self.causal else "full")
        heads = f"H{self.heads}" + (f"/KV{self.kv}" if self.kv != self.heads else "")
        return f"{heads}/D{self.head_dim} Sq{self.q_len} Skv{self.kv_len} {kind}"

    @property
    def flops(self) -> float:
        return 4.0 * self.batch * self.heads * self.q_len * self.kv_len * self.head_dim

    def matrix_gb(self) -> float:
        return self.batch * self.heads * self.q_len * self.kv_len * 4 / 1e9


@dataclass
class Result:
    case: str
    variant: str
    threads: int
    median_ms: float
    min_ms: float
    max_ms: float
    gflops: float
    runs: int
    extra: dict = field(default_factory=dict)


# ---- Models -----------------------------------------------------------------------------------


def _model(nodes, inputs, outputs, opsets, initializers=()):
    graph = helper.make_graph(nodes, "bench", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    model.ir_version = 10
    return model


def _qkv_info(c: Case, dtype):
    return [
        helper.make_tensor_value_info(n, dtype, [c.batch, h, s, c.head_dim])
        for n, h, s in (("Q", c.heads, c.q_len), ("K", c.kv, c.kv_len), ("V", c.kv, c.kv_len))
    ]


def pasa_model(c: Case, dtype=TensorProto.FLOAT16):
    io = _qkv_info(c, dtype)
    node = helper.make_node(
        "PasaAttention", ["Q", "K", "V"], ["Y"], domain="ai.pasa", is_causal=int(c.causal)
    )
    y = helper.make_tensor_value_info("Y", dtype, None)
    return _model([node], io, [y], [("", 23), ("ai.pasa", 1)])


def attn23_model(c: Case):
    dtype = TensorProto.FLOAT16
    io = _qkv_info(c, dtype)
    node = helper.make_node("Attention", ["Q", "K", "V"], ["Y"], is_causal=int(c.causal))
    y = helper.make_tensor_value_info("Y", dtype, None)
    return _model([node], io, [y], [("", 23)])


def mha_model(c: Case):
    hidden = c.heads * c.head_dim
    dtype = TensorProto.FLOAT
    io = [
        helper.make_tensor_value_info(n, dtype, [c.batch, s, hidden])
        for n, s in (("Q", c.q_len), ("K", c.kv_len), ("V", c.kv_len))
    ]
    node = helper.make_node(
        "MultiHeadAttention",
        ["Q", "K", "V"],
        ["Y"],
        domain="com.microsoft",
        num_heads=c.heads,
        unidirectional=int(c.causal),
    )
    y = helper.make_tensor_value_info("Y", dtype, None)
    return _model([node], io, [y], [("", 17), ("com.microsoft", 1)])


def unfused_model(c: Case, fp: str):
    """MatMul -> Mul -> (Add mask) -> Softmax -> MatMul, as exporters write eager attention."""
    np_t, dtype = FP[fp]
    io = [
        helper.make_tensor_value_info(n, dtype, [c.batch, c.heads, s, c.head_dim])
        for n, s in (("Q", c.q_len), ("K", c.kv_len), ("V", c.kv_len))
    ]
    inits = [helper.make_tensor("scale", dtype, [], [float(np_t(1.0 / np.sqrt(c.head_dim)))])]
    nodes = [
        helper.make_node("Transpose", ["K"], ["Kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["Q", "Kt"], ["S"]),
        helper.make_node("Mul", ["S", "scale"], ["Ss"]),
    ]
    scores = "Ss"
    if c.causal:
        past = c.kv_len - c.q_len
        allowed = np.arange(c.kv_len)[None, :] <= (np.arange(c.q_len)[:, None] + past)
        mask = np.where(allowed, 0, np.finfo(np_t).min).astype(np_t)
        inits.append(onnx.numpy_helper.from_array(mask, "mask"))
        nodes.append(helper.make_node("Add", ["Ss", "mask"], ["Sm"]))
        scores = "Sm"
    nodes += [
        helper.make_node("Softmax", [scores], ["P"], axis=-1),
        helper.make_node("MatMul", ["P", "V"], ["Y"]),
    ]
    y = helper.make_tensor_value_info("Y", dtype, None)
    return _model(nodes, io, [y], [("", 17)], inits)


# ---- Runners ----------------------------------------------------------------------------------


def make_inputs(c: Case, seed: int = 0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((c.batch, c.heads, c.q_len, c.head_dim), dtype=np.float32)
    k = rng.standard_normal((c.batch, c.kv, c.kv_len, c.head_dim), dtype=np.float32)
    v = rng.standard_normal((c.batch, c.kv, c.kv_len, c.head_dim), dtype=np.float32)
    return q, k, v


def make_runner(variant: str, c: Case, threads: int, qkv):
    """A zero-argument callable running one inference, or None when the variant is unavailable."""
    q, k, v = qkv
    if c.kv != c.heads and variant not in ("pasa", "pasa_bf16", "attn23_fp16"):
        # No native GQA: the baseline gets K/V repeated per query head, outside the timing.
        k, v = (np.repeat(t, c.heads // c.kv, axis=1) for t in (k, v))
        c = Case(c.heads, c.head_dim, c.q_len, c.kv_len, c.causal, c.batch)
    if variant.startswith("sdpa"):
        try:
            import torch
        except ImportError:
            return None
        dt = {"sdpa_fp32": torch.float32, "sdpa_fp16": torch.float16}.get(variant, torch.bfloat16)
        tq, tk, tv = (torch.from_numpy(t).to(dt) for t in (q, k, v))
        causal = c.causal and c.q_len > 1

        def run_sdpa():
            torch.set_num_threads(threads)
            with torch.inference_mode():
                torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=causal)

        return run_sdpa

    import onnxruntime as ort

    import pasa_onnx

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # Every variant and thread count has a session (and a thread pool) of its own here, and they
    # run one after another. With spinning on, the pool that just finished keeps its threads
    # spinning and takes cores from the next run: measured on the 16-core machine, 16-thread times
    # then swing by 2x. A deployment runs one session; this keeps the others' pools asleep.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    h16 = {"Q": q.astype(np.float16), "K": k.astype(np.float16), "V": v.astype(np.float16)}
    if variant in ("pasa", "pasa_bf16"):
        if variant == "pasa_bf16":
            from pasa_onnx.numerics import BFLOAT16

            model = pasa_model(c, TensorProto.BFLOAT16)
            feeds = {"Q": q.astype(BFLOAT16), "K": k.astype(BFLOAT16), "V": v.astype(BFLOAT16)}
        else:
            model, feeds = pasa_model(c), h16
        sess = pasa_onnx.inference_session(model, opts)

        def run_pasa():
            pasa_onnx.run(sess, feeds)

        return run_pasa
    else:
        if variant == "mha_fp32":
            hidden = c.heads * c.head_dim

            def to3d(t):
                return np.ascontiguousarray(t.transpose(0, 2, 1, 3).reshape(c.batch, -1, hidden))

            model, feeds = mha_model(c), {"Q": to3d(q), "K": to3d(k), "V": to3d(v)}
        elif variant == "unfused_fp32":
            model, feeds = unfused_model(c, "fp32"), {"Q": q, "K": k, "V": v}
        elif variant == "unfused_fp16":
            model, feeds = unfused_model(c, "fp16"), h16
        elif variant == "attn23_fp16":
            model, feeds = attn23_model(c), h16
        else:
            raise ValueError(variant)
        try:
            sess = ort.InferenceSession(
                model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # an onnxruntime without this op/type
            print(f"  {variant}: unavailable ({str(e).splitlines()[0][:100]})", file=sys.stderr)
            return None

    def run_ort():
        sess.run(None, feeds)

    return run_ort


def time_case(c: Case, variants, threads_list, reps: int, max_matrix_gb: float, min_time: float):
    qkv = make_inputs(c)
    runners = {}
    for variant in variants:
        if variant in MATRIX_VARIANTS and c.matrix_gb() * MATRIX_VARIANTS[variant] > max_matrix_gb:
            print(
                f"  {variant}: skipped (score matrices "
                f"~{c.matrix_gb() * MATRIX_VARIANTS[variant]:.1f} GB)",
                file=sys.stderr,
            )
            continue
        for t in threads_list:
            r = make_runner(variant, c, t, qkv)
            if r is None:
                break
            r()  # warm-up (allocations, first-touch)
            runners[(variant, t)] = r
    # Calls per timing sample: enough that a sample of the fastest variant lasts ~min_time.
    probe = {}
    for key, r in runners.items():
        t0 = time.perf_counter()
        r()
        probe[key] = time.perf_counter() - t0
    times = {key: [] for key in runners}
    cpu = {key: [] for key in runners}  # CPU time of this thread (all the work when threads=1)
    keys = list(runners)
    rng = random.Random(0)
    for _ in range(reps):
        rng.shuffle(keys)
        for key in keys:
            inner = max(1, int(min_time / max(probe[key], 1e-6)))
            t0, c0 = time.perf_counter(), time.thread_time()
            for _ in range(inner):
                runners[key]()
            times[key].append((time.perf_counter() - t0) / inner)
            cpu[key].append((time.thread_time() - c0) / inner)
    return times, cpu


def summarise(c: Case, times, cpu) -> tuple[list[Result], list[dict]]:
    results = []
    for (variant, t), ts in times.items():
        med = statistics.median(ts)
        extra = {}
        if t == 1:
            cmed = statistics.median(cpu[(variant, t)])
            extra = {"cpu_median_ms": cmed * 1e3, "cpu_gflops": c.flops / cmed / 1e9}
        results.append(
            Result(
                c.name,
                variant,
                t,
                med * 1e3,
                min(ts) * 1e3,
                max(ts) * 1e3,
                c.flops / med / 1e9,
                len(ts),
                extra,
            )
        )
    ratios = []
    threads = sorted({t for _, t in times})
    pairs = [("pasa", v) for v, _ in times if v != "pasa"] + [("pasa_bf16", "sdpa_bf16")]
    for t in threads:
        for me, variant in dict.fromkeys(pairs):
            if (me, t) not in times or (variant, t) not in times:
                continue
            mine, ts = times[(me, t)], times[(variant, t)]
            paired = [b / a for a, b in zip(mine, ts, strict=True)]
            ratios.append(_ratio(c, f"{me} vs {variant}", t, paired))
            if t == 1:  # CPU time: robust against a loaded machine's scheduling
                mine_c, theirs_c = cpu[(me, 1)], cpu[(variant, 1)]
                paired = [b / a for a, b in zip(mine_c, theirs_c, strict=True)]
                ratios.append(_ratio(c, f"{me} vs {variant} (cpu)", t, paired))
    if ("pasa", 1) in times:
        for t in threads:
            if t > 1 and ("pasa", t) in times:
                one, many = times[("pasa", 1)], times[("pasa", t)]
                paired = [a / b for a, b in zip(one, many, strict=True)]
                ratios.append(_ratio(c, f"pasa {t} threads vs 1", t, paired))
    return results, ratios


def _ratio(c: Case, what: str, threads: int, paired: list[float]) -> dict:
    q = statistics.quantiles(paired, n=4) if len(paired) >= 2 else [paired[0]] * 3
    return {
        "case": c.name,
        "ratio": what,
        "threads": threads,
        "median": statistics.median(paired),
        "q1": q[0],
        "q3": q[2],
        "min": min(paired),
        "max": max(paired),
    }


# ---- Memory (one fresh process per case) -------------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_child(spec: str) -> None:
    variant, heads, kv, dim, seq, causal = spec.split(",")
    c = Case(int(heads), int(dim), int(seq), int(seq), bool(int(causal)), kv_heads=int(kv))
    qkv = make_inputs(c)
    runner = make_runner(variant, c, 1, qkv)
    if runner is None:
        print(json.dumps({"unavailable": True}))
        return
    before = _rss_mb()
    # ru_maxrss only grows: reset the high-water mark so it measures the run (Linux >= 4.0).
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    runner()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open("/proc/self/status") as f:
        hwm = next((int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM")), peak)
    print(json.dumps({"before_mb": before, "peak_mb": hwm, "growth_mb": hwm - before}))


def measure_memory(cases, variants, max_matrix_gb: float) -> list[dict]:
    rows = []
    for c in cases:
        for variant in variants:
            if (
                variant in MATRIX_VARIANTS
                and c.matrix_gb() * MATRIX_VARIANTS[variant] > max_matrix_gb
            ):
                continue
            spec = f"{variant},{c.heads},{c.kv},{c.head_dim},{c.q_len},{int(c.causal)}"
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--memory-child", spec],
                capture_output=True,
                text=True,
                check=False,
            )
            try:
                info = json.loads(out.stdout.strip().splitlines()[-1])
            except (IndexError, json.JSONDecodeError):
                info = {"error": out.stderr.strip().splitlines()[-1:] or ["?"]}
            if info.get("unavailable"):
                continue
            rows.append({"case": c.name, "variant": variant, **info})
            print(f"  memory {c.name:34s} {variant:13s} {info}", file=sys.stderr)
    return rows


# ---- Main -------------------------------------------------------------------------------------


def machine_info() -> dict:
    info = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        info["cpu"] = next(
            ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")
        )
        flags = next(ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags"))
        info["cpu_flags"] = sorted(
            f for f in flags if f.startswith(("avx512", "amx", "avx2", "fma"))
        )
    except (OSError, StopIteration):
        pass
    with contextlib.suppress(OSError):
        info["loadavg_start"] = os.getloadavg()
    import onnxruntime

    info["onnxruntime"] = onnxruntime.__version__
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    try:
        from pasa_onnx.runtime import isa_info

        info["pasa_isa"] = isa_info()
    except ImportError:
        pass
    return info


def _shape(spec: str) -> tuple[int, int, int]:
    """'HxD' or 'H:KVxD' (GQA: KV key/value heads) -> (H, KV, D)"""
    heads, dim = spec.split("x")
    q_heads, _, kv_heads = heads.partition(":")
    return int(q_heads), int(kv_heads or q_heads), int(dim)


def build_cases(args) -> list[Case]:
    shapes = [_shape(s) for s in args.shapes.split(",")]
    seqs = [int(s) for s in args.seq.split(",") if s]  # "" for decode cases only
    causals = [bool(int(x)) for x in args.causal.split(",")]
    cases = [
        Case(h, d, s, s, cz, kv_heads=kv) for h, kv, d in shapes for s in seqs for cz in causals
    ]
    if args.decode:
        for h, kv, d in shapes:
            for past in [int(s) for s in args.decode.split(",")]:
                cases.append(Case(h, d, 1, past, False, kv_heads=kv))
    return cases


def print_tables(results: list[Result], ratios: list[dict]) -> None:
    print(
        f"\n{'case':36s} {'variant':13s} {'thr':>3s} {'median ms':>10s} "
        f"{'min-max ms':>19s} {'GFLOP/s':>8s} {'cpu ms':>9s}"
    )
    for r in results:
        print(
            f"{r.case:36s} {r.variant:13s} {r.threads:3d} {r.median_ms:10.2f} "
            f"{r.min_ms:9.2f}-{r.max_ms:<9.2f} {r.gflops:8.1f} "
            f"{r.extra.get('cpu_median_ms', float('nan')):9.2f}"
        )
    print(
        f"\n{'case':36s} {'ratio (higher = pasa faster)':30s} {'thr':>3s} {'median':>7s} "
        f"{'IQR':>13s} {'min-max':>13s}"
    )
    for q in ratios:
        print(
            f"{q['case']:36s} {q['ratio']:30s} {q['threads']:3d} {q['median']:7.2f} "
            f"{q['q1']:6.2f}-{q['q3']:<6.2f} {q['min']:6.2f}-{q['max']:<6.2f}"
        )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--threads", default="1,2", help="comma-separated intra-op thread counts")
    ap.add_argument(
        "--shapes",
        default="12x64,32x128",
        help="HxD pairs, comma-separated; H:KVxD for GQA (e.g. 32:8x128)",
    )
    ap.add_argument("--seq", default="128,512,1024,2048,4096,8192", help="sequence lengths")
    ap.add_argument("--causal", default="0,1", help="0, 1 or 0,1")
    ap.add_argument(
        "--decode", default="4096", help="past lengths of Sq=1 decode cases ('' for none)"
    )
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--reps", type=int, default=7, help="interleaved repetitions per case")
    ap.add_argument("--min-time", type=float, default=0.05, help="seconds per timing sample")
    ap.add_argument("--max-matrix-gb", type=float, default=4.0, help="skip S x S baselines above")
    ap.add_argument(
        "--quick", action="store_true", help="short grid: H12/D64 and H32/D128 at S=1024,4096"
    )
    ap.add_argument(
        "--memory", action="store_true", help="also measure peak memory (fresh processes)"
    )
    ap.add_argument("--memory-only", action="store_true")
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child)
        return 0
    if args.quick:
        args.seq, args.reps = "1024,4096", min(args.reps, 5)
    threads = [int(t) for t in args.threads.split(",")]
    variants = [v for v in args.variants.split(",") if v]
    cases = build_cases(args)
    info = machine_info()
    print(f"machine: {info}", file=sys.stderr)

    results, ratios, memory = [], [], []
    if not args.memory_only:
        for c in cases:
            print(f"case {c.name} ...", file=sys.stderr)
            times, cpu = time_case(
                c, variants, threads, args.reps, args.max_matrix_gb, args.min_time
            )
            res, rat = summarise(c, times, cpu)
            results += res
            ratios += rat
            print_tables(res, rat)
            sys.stdout.flush()
    if args.memory or args.memory_only:
        mem_cases = [c for c in cases if c.q_len > 1 and not c.causal]
        memory = measure_memory(mem_cases, variants, args.max_matrix_gb)
    with contextlib.suppress(OSError):
        info["loadavg_end"] = os.getloadavg()
    if results:
        print("\n==== all cases ====")
        print_tables(results, ratios)
    if memory:
        print(f"\n{'case':36s} {'variant':13s} {'peak growth MB':>15s}")
        for m in memory:
            print(f"{m['case']:36s} {m['variant']:13s} {m.get('growth_mb', float('nan')):15.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "machine": info,
                    "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
                    "results": [asdict(r) for r in results],
                    "ratios": ratios,
                    "memory": memory,
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
