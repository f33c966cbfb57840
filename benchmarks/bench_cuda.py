"""PasaAttention on onnxruntime's CUDA execution provider against its peers, I/O on the device.

    python benchmarks/bench_cuda.py --json docs/bench-results/cuda_h200.json

Variants (fp16, batch 1, every input and output bound on the GPU through io_binding):
  pasa      ai.pasa::PasaAttention (default precision `half`), 4-D inputs
  mha       com.microsoft.MultiHeadAttention, 3-D inputs (``unidirectional`` if causal; no GQA)
  attn23    ONNX Attention (opset 23), 4-D inputs
  unfused   MatMul -> Mul -> (Add causal mask) -> Softmax -> MatMul, as exporters write it
            (skipped where the score matrix would exceed --max-matrix-gb)
  sdpa      torch.nn.functional.scaled_dot_product_attention, when torch with CUDA is present
Cases: H32/D128 and H12/D64 at S = 1k/4k/16k, causal and not; decode (1 query over 4k and 32k
keys, 32 query heads with 32 or 8 key/value heads). Each run is timed on its own (ORT syncs at
the end of a run); reported are the median, min and max of --reps runs after warm-up, and
TFLOP/s = 4·H·Sq·Skv·D / t (half of it for causal prefill). Each result's ``extra.gpu_after``
holds nvidia-smi's SM clock, board power and clock-throttle reasons right after its runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from bench_attention import _model  # the CPU benchmark's one-graph model builder (IR 10)
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

F16 = TensorProto.FLOAT16


@dataclass(frozen=True)
class Case:
    heads: int
    kv: int
    q_len: int
    kv_len: int
    head_dim: int
    causal: bool

    @property
    def name(self) -> str:
        kind = "decode" if self.q_len == 1 else ("causal" if self.causal else "full")
        kv = f"/{self.kv}kv" if self.kv != self.heads else ""
        return f"H{self.heads}{kv}/D{self.head_dim} Sq={self.q_len} Skv={self.kv_len} {kind}"

    @property
    def flops(self) -> float:
        f = 4.0 * self.heads * self.q_len * self.kv_len * self.head_dim
        return f / 2 if self.causal and self.q_len > 1 else f


@dataclass
class Result:
    case: str
    variant: str
    median_ms: float
    min_ms: float
    max_ms: float
    tflops: float
    runs: int
    extra: dict = field(default_factory=dict)


def _bhsd(c: Case):
    return [
        helper.make_tensor_value_info(n, F16, [1, h, s, c.head_dim])
        for n, h, s in (("Q", c.heads, c.q_len), ("K", c.kv, c.kv_len), ("V", c.kv, c.kv_len))
    ]


def pasa_model(c: Case):
    node = helper.make_node(
        "PasaAttention", ["Q", "K", "V"], ["Y"], domain="ai.pasa", is_causal=int(c.causal)
    )
    return _model(
        [node],
        _bhsd(c),
        [helper.make_tensor_value_info("Y", F16, None)],
        [("", 23), ("ai.pasa", 1)],
    )


def attn23_model(c: Case):
    node = helper.make_node("Attention", ["Q", "K", "V"], ["Y"], is_causal=int(c.causal))
    return _model([node], _bhsd(c), [helper.make_tensor_value_info("Y", F16, None)], [("", 23)])


def mha_model(c: Case):
    io = [
        helper.make_tensor_value_info(n, F16, [1, s, c.heads * c.head_dim])
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
    return _model(
        [node],
        io,
        [helper.make_tensor_value_info("Y", F16, None)],
        [("", 17), ("com.microsoft", 1)],
    )


def unfused_model(c: Case):
    inits = [helper.make_tensor("scale", F16, [], [float(np.float16(1.0 / np.sqrt(c.head_dim)))])]
    nodes = [
        helper.make_node("Transpose", ["K"], ["Kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["Q", "Kt"], ["S"]),
        helper.make_node("Mul", ["S", "scale"], ["Ss"]),
    ]
    scores = "Ss"
    if c.causal:
        past = c.kv_len - c.q_len
        allowed = np.arange(c.kv_len)[None, :] <= (np.arange(c.q_len)[:, None] + past)
        mask = np.where(allowed, 0, np.finfo(np.float16).min).astype(np.float16)
        inits.append(onnx.numpy_helper.from_array(mask, "mask"))
        nodes.append(helper.make_node("Add", ["Ss", "mask"], ["Sm"]))
        scores = "Sm"
    nodes += [
        helper.make_node("Softmax", [scores], ["P"], axis=-1),
        helper.make_node("MatMul", ["P", "V"], ["Y"]),
    ]
    if c.kv != c.heads:
        raise ValueError("unfused graph: no GQA")
    return _model(
        nodes, _bhsd(c), [helper.make_tensor_value_info("Y", F16, None)], [("", 17)], inits
    )


def _ort_runner(model, feeds: dict[str, np.ndarray], custom_ops: bool):
    import onnxruntime as ort

    import pasa_onnx

    opts = ort.SessionOptions()
    if custom_ops:
        opts = pasa_onnx.session_options(opts)
    opts.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    sess = ort.InferenceSession(
        model.SerializeToString(), opts, providers=["CUDAExecutionProvider"]
    )
    binding = sess.io_binding()
    keep = []
    for name, arr in feeds.items():
        ov = ort.OrtValue.ortvalue_from_numpy(arr, "cuda", 0)
        keep.append(ov)
        binding.bind_ortvalue_input(name, ov)
    for o in sess.get_outputs():
        binding.bind_output(o.name, "cuda", 0)

    def run():
        sess.run_with_iobinding(binding)

    run.keep = keep  # the device inputs live as long as the runner
    return run


def _torch_runner(c: Case, q, k, v):
    import torch
    import torch.nn.functional as F

    dev = torch.device("cuda")
    tq, tk, tv = (torch.from_numpy(x).to(dev) for x in (q, k, v))
    gqa = c.kv != c.heads
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def run():
        start.record()
        F.scaled_dot_product_attention(
            tq, tk, tv, is_causal=c.causal and c.q_len > 1, enable_gqa=gqa
        )
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    return run


def time_runner(run, reps: int, warmup: int, returns_time: bool = False) -> list[float]:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        t = run()
        times.append(t if returns_time else time.perf_counter() - t0)
    return times


def bench_case(c: Case, variants, reps: int, warmup: int, max_matrix_gb: float) -> list[Result]:
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, c.heads, c.q_len, c.head_dim)).astype(np.float16)
    k = rng.standard_normal((1, c.kv, c.kv_len, c.head_dim)).astype(np.float16)
    v = rng.standard_normal((1, c.kv, c.kv_len, c.head_dim)).astype(np.float16)
    bhsd = {"Q": q, "K": k, "V": v}
    results = []
    for variant in variants:
        extra = {}
        try:
            if variant == "pasa":
                run = _ort_runner(pasa_model(c), bhsd, True)
            elif variant == "attn23":
                run = _ort_runner(attn23_model(c), bhsd, False)
            elif variant == "mha":
                if c.kv != c.heads:
                    continue
                bsh = {
                    n: np.ascontiguousarray(x.transpose(0, 2, 1, 3)).reshape(1, x.shape[2], -1)
                    for n, x in bhsd.items()
                }
                run = _ort_runner(mha_model(c), bsh, False)
            elif variant == "unfused":
                if c.kv != c.heads or c.heads * c.q_len * c.kv_len * 2 * 3 > max_matrix_gb * 2**30:
                    continue
                run = _ort_runner(unfused_model(c), bhsd, False)
            elif variant == "sdpa":
                try:
                    import torch

                    if not torch.cuda.is_available():
                        continue
                except ImportError:
                    continue
                run = _torch_runner(c, q, k, v)
                times = time_runner(run, reps, warmup, returns_time=True)
                extra["timing"] = "cuda events"
            else:
                raise ValueError(variant)
            if variant != "sdpa":
                times = time_runner(run, reps, warmup)
                extra["timing"] = "wall per run_with_iobinding"
        except Exception as e:  # noqa: BLE001 - a variant that cannot run is reported, not fatal
            results.append(
                Result(
                    c.name,
                    variant,
                    float("nan"),
                    float("nan"),
                    float("nan"),
                    float("nan"),
                    0,
                    {"error": str(e).splitlines()[0][:300]},
                )
            )
            print(f"{c.name:40s} {variant:8s} error: {str(e).splitlines()[0][:120]}", flush=True)
            continue
        state = gpu_state()
        if state is not None:
            extra["gpu_after"] = state
        med = statistics.median(times)
        r = Result(
            c.name,
            variant,
            med * 1e3,
            min(times) * 1e3,
            max(times) * 1e3,
            c.flops / med / 1e12,
            len(times),
            extra,
        )
        results.append(r)
        clock = f"  SM {state['clocks.sm']} MHz" if state else ""
        print(
            f"{c.name:40s} {variant:8s} {r.median_ms:9.3f} ms  [{r.min_ms:.3f}, {r.max_ms:.3f}]"
            f"  {r.tflops:7.1f} TFLOP/s{clock}",
            flush=True,
        )
    return results


# What nvidia-smi says about the GPU right after a variant's timed runs: the SM clock (MHz), the
# board power (W) and the active clock-throttle reasons (a bit mask; 0x4 is the software power
# cap). The same kernel has measured different times in different runs; this says whether the
# clock moved. None where nvidia-smi is missing. (Newer drivers call the reasons
# clocks_event_reasons; the older name is tried first, then the state without it.)
GPU_QUERIES = (
    "clocks.sm,power.draw,clocks_throttle_reasons.active",
    "clocks.sm,power.draw,clocks_event_reasons.active",
    "clocks.sm,power.draw",
)


def gpu_state() -> dict | None:
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return None
    for query in GPU_QUERIES:
        try:
            out = subprocess.run(
                ["nvidia-smi", "-i", "0", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        fields = [f.strip() for f in out.strip().split(",")]
        if len(fields) == len(query.split(",")):
            return dict(zip(query.split(","), fields, strict=True))
    return None


def build_cases(args) -> list[Case]:
    cases = []
    for h, d in ((32, 128), (12, 64)):
        for s in args.seq:
            for causal in (False, True):
                cases.append(Case(h, h, s, s, d, causal))
    for skv in args.decode:
        for kv in (32, 8):
            cases.append(Case(32, kv, 1, skv, 128, False))
    return cases


def machine_info() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform()}
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
    except ImportError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seq", type=int, nargs="*", default=[1024, 4096, 16384])
    ap.add_argument("--decode", type=int, nargs="*", default=[4096, 32768])
    ap.add_argument("--variants", nargs="*", default=["pasa", "mha", "attn23", "unfused", "sdpa"])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--max-matrix-gb", type=float, default=4.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    results = []
    for c in build_cases(args):
        results += bench_case(c, args.variants, args.reps, args.warmup, args.max_matrix_gb)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "command": " ".join(["python", "benchmarks/bench_cuda.py", *(argv or sys.argv[1:])]),
            "machine": machine_info(),
            "results": [asdict(r) for r in results],
        }
        args.json.write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
